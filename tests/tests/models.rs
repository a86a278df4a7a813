//! Several models side by side: jobs reach only their model's workers, aliases split users and
//! keep each on one arm, the catalogue refuses what it cannot route, and one model's trouble
//! leaves the others flowing.

use std::collections::HashMap;

use genq_shared::{routing::file_version, types::JobStatus};
use genq_tests::{
    OTHER_MODEL, TestApp, assert_exit, other_model_path, stderr, stdout, tiny_model_name,
    tiny_model_path,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// Each of `users` submits one job through `alias` (one bulk request); returns each user's model.
async fn routes_of(app: &TestApp, alias: &str, users: &[String]) -> HashMap<String, String> {
    let jobs: Vec<Value> = users
        .iter()
        .map(|user| json!({ "prompts": ["hi"], "max_tokens": 1, "model": alias, "user": user }))
        .collect();
    let ids = app.submit_bulk(&jobs).await;
    let models: Vec<(Uuid, String)> =
        sqlx::query_as("select id, routed_model from jobs where id = any($1)")
            .bind(&ids)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let by_id: HashMap<Uuid, String> = models.into_iter().collect();
    users
        .iter()
        .zip(&ids)
        .map(|(user, id)| (user.clone(), by_id[id].clone()))
        .collect()
}

/// Sets an alias with genqctl, then reads the catalogue through the API (which refreshes this
/// replica's copy), so the next request routes by the new split.
async fn set_alias(app: &TestApp, alias: &str, arms: &[&str]) {
    let mut args = vec!["models", "alias", alias];
    for arm in arms {
        args.extend(["--to", arm]);
    }
    assert_exit(&app.genqctl(&args).await, 0);
    refresh_catalogue(app).await;
}

/// Has the API read the catalogue again (as it does by itself every 2 s): `GET /v1/models` reads
/// it afresh.
async fn refresh_catalogue(app: &TestApp) {
    assert_eq!(app.get("/v1/models").await.status(), 200);
}

async fn register_other(app: &TestApp, extra: &[&str]) {
    let mut args = vec!["models", "add", OTHER_MODEL];
    args.extend(extra);
    assert_exit(&app.genqctl(&args).await, 0);
}

#[tokio::test]
async fn jobs_reach_only_their_models_workers_and_record_the_version_that_ran_them() {
    let app = TestApp::spawn().await;
    let tiny = tiny_model_name();
    let tiny_worker = app.start_worker(2).await;
    let other_worker = app.start_other_worker(2, &[]).await;
    app.until_model_served(OTHER_MODEL).await;
    let body = |model: &str| json!({ "prompts": ["Once upon a time"], "max_tokens": 8, "seed": 3, "model": model });
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push((tiny.clone(), app.submit(&body(&tiny)).await));
        ids.push((OTHER_MODEL.to_owned(), app.submit(&body(OTHER_MODEL)).await));
    }

    let mut texts: HashMap<String, String> = HashMap::new();
    for (model, id) in &ids {
        let view = app.wait_final(*id).await;
        assert_eq!(view.status, JobStatus::Completed);
        assert_eq!(
            view.model.as_deref(),
            Some(model.as_str()),
            "ran on its model"
        );
        let route = view.route.expect("a routed job");
        let file = if *model == tiny {
            tiny_model_path()
        } else {
            other_model_path()
        };
        assert_eq!(route.version, Some(file_version(file).unwrap()));
        texts.insert(model.clone(), view.results[0].generated_text.clone());
    }
    // Two models with different weights: the same seeded request reads differently.
    assert_ne!(texts[&tiny], texts[OTHER_MODEL]);
    tiny_worker.stop().await;
    other_worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_alias_splits_users_evenly_keeps_them_sticky_and_moves_only_whom_a_new_split_must() {
    let app = TestApp::spawn().await;
    let tiny = tiny_model_name();
    register_other(&app, &[]).await;
    set_alias(
        &app,
        "gpt2",
        &[&format!("{tiny}=50"), &format!("{OTHER_MODEL}=50")],
    )
    .await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();

    let first = routes_of(&app, "gpt2", &users).await;
    let on_tiny = first.values().filter(|m| **m == tiny).count();
    assert!(
        (450..=550).contains(&on_tiny),
        "{on_tiny} of 1000 on {tiny}"
    );
    for _ in 0..2 {
        assert_eq!(
            routes_of(&app, "gpt2", &users).await,
            first,
            "every user sticky"
        );
    }

    set_alias(
        &app,
        "gpt2",
        &[&format!("{tiny}=90"), &format!("{OTHER_MODEL}=10")],
    )
    .await;
    let before = routes_of(&app, "gpt2", &users).await;
    set_alias(
        &app,
        "gpt2",
        &[&format!("{tiny}=80"), &format!("{OTHER_MODEL}=20")],
    )
    .await;
    let after = routes_of(&app, "gpt2", &users).await;
    let moved: Vec<(&String, &String)> = users
        .iter()
        .filter(|u| before[*u] != after[*u])
        .map(|u| (&before[u], &after[u]))
        .collect();
    assert!(
        moved
            .iter()
            .all(|(from, to)| **from == tiny && *to == OTHER_MODEL),
        "only users of the shrinking arm move, to the growing one"
    );
    assert!(
        (50..=150).contains(&moved.len()),
        "{} users moved",
        moved.len()
    );

    // The arms compared: every job that asked for the alias, by the model that took it.
    let stats = app.genqctl(&["models", "stats", "gpt2", "--json"]).await;
    assert_exit(&stats, 0);
    let arms: Vec<Value> = serde_json::from_str(&stdout(&stats)).unwrap();
    let jobs: i64 = arms.iter().map(|a| a["jobs"].as_i64().unwrap()).sum();
    assert_eq!((arms.len(), jobs), (2, 5000));
    app.stop().await;
}

#[tokio::test]
async fn what_the_catalogue_cannot_route_is_refused_naming_the_problem() {
    let app = TestApp::spawn().await;
    let tiny = tiny_model_name();
    let response = app
        .post("/batch", &json!({ "prompts": ["hi"], "model": "gpt5" }))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "model");
    assert_eq!(
        body["error"]["message"],
        format!("the model 'gpt5' does not exist; models: {tiny}")
    );
    let openai = app
        .post(
            "/v1/completions",
            &json!({ "model": "gpt5", "prompt": "hi" }),
        )
        .await;
    assert_eq!(openai.status(), 404);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");

    let refusals: [(&[&str], String); 5] = [
        (
            &["models", "alias", "a", "--to", "nope=100"],
            "genqctl: the model 'nope' is not registered (genqctl models add nope)".into(),
        ),
        (
            &["models", "alias", "a", "--to", &format!("{tiny}=60")],
            "genqctl: the weights add up to 60; they must add up to 100".into(),
        ),
        (
            &["models", "alias", "a", "--to", &format!("{tiny}=-5")],
            format!("genqctl: --to {tiny}=-5: the weight must be a whole number from 0 to 100"),
        ),
        (
            &["models", "add", "x", "--fallback", "nope"],
            "genqctl: the fallback model 'nope' is not registered (genqctl models add nope)".into(),
        ),
        (
            &["queue", "stats", "--model", "nope"],
            "genqctl: the model 'nope' is not registered (genqctl models list)".into(),
        ),
    ];
    for (args, message) in refusals {
        let output = app.genqctl(args).await;
        assert_exit(&output, 1);
        assert_eq!(stderr(&output).trim_end(), message, "genqctl {args:?}");
    }

    // A model jobs wait for is removed only with --force, which cancels them with a reason.
    register_other(&app, &[]).await;
    let waiting = app
        .submit(&json!({ "prompts": ["hi"], "model": OTHER_MODEL }))
        .await;
    let refused = app.genqctl(&["models", "remove", OTHER_MODEL]).await;
    assert_exit(&refused, 1);
    assert_eq!(
        stderr(&refused).trim_end(),
        format!(
            "genqctl: 1 job(s) wait for {OTHER_MODEL} and 0 run on it; --force cancels the waiting ones (running ones finish)"
        )
    );
    assert_exit(
        &app.genqctl(&["models", "remove", OTHER_MODEL, "--force"])
            .await,
        0,
    );
    let view = app.view(waiting).await;
    assert_eq!(view.status, JobStatus::Cancelled);
    assert_eq!(
        view.error.unwrap().message,
        format!("its model ({OTHER_MODEL}) was removed")
    );
    app.stop().await;
}

#[tokio::test]
async fn pausing_or_stopping_one_models_workers_leaves_the_other_flowing_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let tiny = tiny_model_name();
    let tiny_worker = app.start_worker(2).await;
    let other_worker = app.start_other_worker(2, &[]).await;
    app.until_model_served(OTHER_MODEL).await;

    assert_exit(
        &app.genqctl(&["queue", "pause", "--model", OTHER_MODEL])
            .await,
        0,
    );
    refresh_catalogue(&app).await;
    let paused = app
        .post(
            "/batch",
            &json!({ "prompts": ["hi"], "model": OTHER_MODEL }),
        )
        .await;
    assert_eq!(paused.status(), 503);
    let flowing = app
        .submit(&json!({ "prompts": ["hi"], "max_tokens": 4 }))
        .await;
    assert_eq!(app.wait_final(flowing).await.status, JobStatus::Completed);
    assert_exit(
        &app.genqctl(&["queue", "resume", "--model", OTHER_MODEL])
            .await,
        0,
    );
    refresh_catalogue(&app).await;

    other_worker.stop().await;
    let (mut stranded, mut served) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let body = |model: &str| json!({ "prompts": ["hi"], "max_tokens": 4, "model": model });
        stranded.push(app.submit(&body(OTHER_MODEL)).await);
        served.push(app.submit(&body(&tiny)).await);
    }
    for id in &served {
        assert_eq!(app.wait_final(*id).await.status, JobStatus::Completed);
    }
    for id in &stranded {
        assert_eq!(
            app.status(*id).await,
            JobStatus::Queued,
            "waits for its model"
        );
    }
    let other_worker = app.start_other_worker(2, &[]).await;
    for id in &stranded {
        let view = app.wait_final(*id).await;
        assert_eq!(
            (view.status, view.model.as_deref()),
            (JobStatus::Completed, Some(OTHER_MODEL))
        );
    }
    tiny_worker.stop().await;
    other_worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_job_queued_before_models_existed_is_dispatched_to_the_default_models_queue() {
    let app = TestApp::spawn().await;
    let id = app
        .submit(&json!({ "prompts": ["old"], "max_tokens": 4 }))
        .await;
    // As an upgrade finds it: no route, its task in the old single queue (which no worker reads
    // any more), past the grace, checked by the old build's last pass, which marked Redis intact.
    let mut redis = genq_tests::redis_connection().await;
    genq_shared::queue::delete_namespace(&mut redis, &app.queue)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{}:genq:intact", app.queue))
        .arg("intact")
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    sqlx::query(
        "update jobs set routed_model = null, requested_model = null,
                         queued_at = now() - interval '1 minute'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("insert into reconciler_marks (queue, checked_until) values ($1, now())")
        .bind(&app.queue)
        .execute(&app.pool)
        .await
        .unwrap();

    let pass = app.genqctl(&["queue", "reconcile", "--json"]).await;
    assert_exit(&pass, 0);
    let pass: Value = serde_json::from_str(&stdout(&pass)).unwrap();
    assert_eq!(
        (&pass["full_check"], &pass["redispatched"]),
        (&json!(true), &json!(1))
    );
    let worker = app.start_worker(1).await;
    let view = app.wait_final(id).await;
    assert_eq!(view.status, JobStatus::Completed);
    let route = view.route.unwrap();
    assert_eq!(
        (route.requested, route.model),
        (tiny_model_name(), tiny_model_name())
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn queue_stats_and_purge_with_model_touch_only_that_models_jobs() {
    let app = TestApp::spawn().await;
    register_other(&app, &[]).await;
    let body = |model: &str| json!({ "prompts": ["hi"], "max_tokens": 4, "model": model });
    let mut kept = Vec::new();
    for _ in 0..2 {
        kept.push(app.submit(&body(&tiny_model_name())).await);
    }
    for _ in 0..3 {
        app.submit(&body(OTHER_MODEL)).await;
    }

    let stats = app
        .genqctl(&["queue", "stats", "--model", OTHER_MODEL, "--json"])
        .await;
    assert_exit(&stats, 0);
    let stats: Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert_eq!(
        (&stats["queued"], &stats["live_workers"]),
        (&json!(3), &json!(0))
    );
    let purged = app
        .genqctl(&["queue", "purge", "--model", OTHER_MODEL, "--yes"])
        .await;
    assert_exit(&purged, 0);
    assert_eq!(
        stdout(&purged),
        "purged 3 queued jobs (3 taken out of Redis)\n"
    );
    for id in kept {
        assert_eq!(app.status(id).await, JobStatus::Queued);
    }
    assert_eq!(
        genq_tests::waiting_tasks(&genq_shared::queue::model_queue(&app.queue, OTHER_MODEL))
            .await
            .len(),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_openai_sdks_user_keeps_each_user_on_the_arm_its_hash_picks() {
    let app = TestApp::spawn().await;
    let tiny = tiny_model_name();
    let tiny_worker = app.start_worker(2).await;
    let other_worker = app.start_other_worker(2, &[]).await;
    app.until_model_served(OTHER_MODEL).await;
    set_alias(
        &app,
        "gpt2",
        &[&format!("{tiny}=50"), &format!("{OTHER_MODEL}=50")],
    )
    .await;
    let users: Vec<String> = (0..8)
        .flat_map(|i| [format!("u{i}"), format!("u{i}")])
        .collect();
    let mut args = vec!["gpt2"];
    args.extend(users.iter().map(String::as_str));

    let sent = super::openai::sdk(&app, &app.key, "users", &args).await;
    assert_eq!(sent, json!({ "sent": 16 }));

    let routed: Vec<String> = sqlx::query_scalar(
        "select model from jobs where requested_model = 'gpt2' and status = 'completed'
         order by created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let arms = [
        genq_shared::routing::Arm {
            model: tiny.clone(),
            weight: 50,
        },
        genq_shared::routing::Arm {
            model: OTHER_MODEL.into(),
            weight: 50,
        },
    ];
    let expected: Vec<String> = users
        .iter()
        .map(|u| {
            let arm = genq_shared::routing::choose_arm("gpt2", &arms, &format!("user:{u}"));
            arm.unwrap().model.clone()
        })
        .collect();
    assert_eq!(routed, expected, "each request ran on its user's arm");
    tiny_worker.stop().await;
    other_worker.stop().await;
    app.stop().await;
}
