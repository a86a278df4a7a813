//! Waiting without polling: long polls (`GET /batch_result/{id}?wait=S`) and a job's Server-Sent
//! Events (`GET /batch_result/{id}/events`), resumed with `Last-Event-ID`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use genq_tests::{
    TestApp,
    sse::{EventStream, SseEvent},
};
use serde_json::{Value, json};
use uuid::Uuid;

async fn long_poll(app: &TestApp, id: Uuid, wait: &str) -> (u16, Value) {
    let response = app.get(&format!("/batch_result/{id}?wait={wait}")).await;
    (response.status().as_u16(), response.json().await.unwrap())
}

fn events_url(app: &TestApp, id: Uuid, query: &str) -> String {
    format!("{}/batch_result/{id}/events{query}", app.address)
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_the_job_turns_final() {
    let app = TestApp::spawn().await;
    // No worker: the job stays queued until it is cancelled.
    let id = app.submit(&json!({ "prompts": ["wait for me"] })).await;

    let poll = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/batch_result/{id}?wait=60", app.address);
        async move { client.get(url).send().await.unwrap().json::<Value>().await }
    });
    // Cancel only once the poll is waiting, so that the answer must come from the notification.
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.api_watch.watched_jobs() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the long poll is waiting");
    let started = Instant::now();
    let cancel = app.post(&format!("/batch/{id}/cancel"), &json!({})).await;
    assert_eq!(cancel.status(), 200);
    let view = poll.await.unwrap().unwrap();

    assert_eq!(view["status"], "cancelled");
    // Woken by the notification: neither the 60 s wait nor the 30 s safety re-read ran out.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the long poll answered after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_long_poll_answers_the_current_state_when_its_wait_runs_out() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["nobody runs me"] })).await;

    let started = Instant::now();
    let (status, view) = long_poll(&app, id, "1").await;

    assert_eq!(status, 200);
    assert_eq!(view["status"], "queued");
    assert_eq!(view["task_id"], id.to_string());
    assert!(started.elapsed() >= Duration::from_secs(1));
    // wait=0 is a plain read.
    let (status, view) = long_poll(&app, id, "0").await;
    assert_eq!((status, view["status"].as_str()), (200, Some("queued")));
}

#[tokio::test]
async fn a_wait_outside_0_to_60_seconds_is_refused_naming_wait() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["x"] })).await;

    for wait in ["61", "-1", "1.5", "soon", ""] {
        let (status, body) = long_poll(&app, id, wait).await;
        assert_eq!(
            (status, body),
            (
                422,
                json!({ "error": {
                    "code": "invalid_field",
                    "field": "wait",
                    "message": "wait must be a whole number of seconds from 0 to 60",
                }})
            ),
            "wait={wait}"
        );
    }
}

/// Follows a job with tokens from before a worker exists to its end.
async fn follow_a_job_to_its_end(app: &TestApp, body: Value) -> (Uuid, Vec<SseEvent>) {
    let id = app.submit(&body).await;
    let mut stream =
        EventStream::open(&app.client, &events_url(app, id, "?tokens=true"), None).await;
    let first = stream.next().await.expect("a first event");
    assert_eq!(
        (first.event.as_str(), &first.data),
        ("status", &json!({ "status": "queued" }))
    );
    let worker = app.start_worker(4).await;
    let mut events = vec![first];
    // Well under the 30 s safety re-read: every change must arrive by its notification.
    let rest = tokio::time::timeout(Duration::from_secs(15), stream.rest()).await;
    events.extend(rest.expect("the job's events within 15 s"));
    worker.stop().await;
    (id, events)
}

#[tokio::test]
async fn events_carry_status_changes_prompts_decoded_text_and_the_final_job() {
    let app = TestApp::spawn().await;
    let prompts = ["The sea is", "My dog", "Numbers: 1 2 3"];
    let body = json!({ "prompts": prompts, "max_tokens": 24, "seed": 11, "stop": ["e t"] });

    let (id, events) = follow_a_job_to_its_end(&app, body).await;

    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let statuses: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| &e.data["status"])
        .collect();
    // A short job may finish before its "running" is read: changes can merge, never reorder.
    assert!(
        statuses == [&json!("queued"), &json!("running"), &json!("completed")]
            || statuses == [&json!("queued"), &json!("completed")],
        "{statuses:?}"
    );
    assert_eq!(names.last(), Some(&"done"));
    let done = &events.last().unwrap().data;
    let stored: Value = app
        .get(&format!("/batch_result/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        done, &stored,
        "done carries the job as GET /batch_result answers it"
    );
    assert_eq!(stored["status"], "completed");

    // Each prompt's result arrives once, as stored, and its token texts add up to it.
    let mut text_of: BTreeMap<i64, String> = BTreeMap::new();
    let mut prompt_events = Vec::new();
    for event in &events {
        match event.event.as_str() {
            "token" => {
                assert_eq!(event.data["attempt"], 1);
                let prompt = event.data["prompt"].as_i64().unwrap();
                text_of
                    .entry(prompt)
                    .or_default()
                    .push_str(event.data["text"].as_str().unwrap());
            }
            "prompt" => prompt_events.push(event.data.clone()),
            _ => {}
        }
    }
    assert_eq!(prompt_events.len(), prompts.len());
    for result in stored["results"].as_array().unwrap() {
        let index = result["index"].as_i64().unwrap();
        let event = prompt_events
            .iter()
            .find(|e| e["index"] == index)
            .expect("a prompt event per result");
        assert_eq!(event["generated_text"], result["generated_text"]);
        assert_eq!(event["completion_tokens"], result["completion_tokens"]);
        assert_eq!(event["finish_reason"], result["finish_reason"]);
        let streamed = text_of.get(&index).map_or("", String::as_str);
        assert_eq!(streamed, result["generated_text"].as_str().unwrap());
    }
    // Stream events have ids, in increasing order.
    let ids: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e.event == "token" || e.event == "prompt")
        .map(|e| {
            let (ms, seq) = e.id.split_once('-').expect("a stream entry id");
            (ms.parse().unwrap(), seq.parse().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn without_tokens_true_no_token_events_are_sent() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(2).await;
    let id = app
        .submit(&json!({ "prompts": ["a", "b"], "max_tokens": 16, "seed": 2 }))
        .await;
    app.wait_final(id).await;

    let events = EventStream::open(&app.client, &events_url(&app, id, ""), None)
        .await
        .rest()
        .await;

    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["prompt", "prompt", "status", "done"]);
    worker.stop().await;
}

#[tokio::test]
async fn last_event_id_resumes_after_that_event() {
    let app = TestApp::spawn().await;
    let worker = app.start_worker(4).await;
    let id = app
        .submit(&json!({ "prompts": ["one", "two", "three"], "max_tokens": 20, "seed": 5 }))
        .await;
    app.wait_final(id).await;
    let url = events_url(&app, id, "?tokens=true");
    let all = EventStream::open(&app.client, &url, None)
        .await
        .rest()
        .await;
    let with_ids: Vec<&SseEvent> = all
        .iter()
        .filter(|e| e.event == "token" || e.event == "prompt")
        .collect();
    assert!(with_ids.len() >= 4, "{all:?}");
    let cut = with_ids.len() / 2;

    let resumed = EventStream::open(&app.client, &url, Some(&with_ids[cut].id))
        .await
        .rest()
        .await;

    // Exactly what followed that event: the rest of the stream, then the final status and job.
    assert_eq!(resumed, all[all.len() - (with_ids.len() - cut - 1) - 2..]);
    worker.stop().await;
}

#[tokio::test]
async fn events_of_unknown_or_another_tenants_jobs_are_404_and_bad_resume_ids_422() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["mine"] })).await;
    let stranger = genq_tests::client_with_key(Some(&app.tenant_key("stranger").await));

    for (client, path) in [
        (
            &app.client,
            format!("/batch_result/{}/events", Uuid::now_v7()),
        ),
        (&stranger, format!("/batch_result/{id}/events")),
    ] {
        let response = client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    let response = app
        .client
        .get(events_url(&app, id, ""))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "Last-Event-ID");
    let response = app
        .get(&format!("/batch_result/{id}/events?tokens=yes"))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["field"], "tokens");
}

#[tokio::test]
async fn decoded_text_arrives_while_the_prompt_is_still_generating() {
    let app = TestApp::spawn().await;
    // Long prompts, four at a time: each takes many 100 ms publishing ticks to generate.
    let worker = app.start_worker(4).await;
    let prompts: Vec<String> = (0..8).map(|i| format!("Tell story {i}:")).collect();
    let id = app
        .submit(&json!({ "prompts": prompts, "max_tokens": 240, "seed": 8 }))
        .await;

    let events = EventStream::open(&app.client, &events_url(&app, id, "?tokens=true"), None)
        .await
        .rest()
        .await;

    // Token events of a prompt before its `prompt` event: more than one means text was
    // published while it was still being generated (the last one is the rest of its text).
    let most_before_finishing = (0..8)
        .map(|prompt| {
            events
                .iter()
                .take_while(|e| !(e.event == "prompt" && e.data["index"] == prompt))
                .filter(|e| e.event == "token" && e.data["prompt"] == prompt)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_before_finishing >= 2,
        "no prompt had its text published while it was generating: {events:?}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn an_empty_last_event_id_streams_from_the_start() {
    let app = TestApp::spawn().await;
    let id = app.submit(&json!({ "prompts": ["nobody runs me"] })).await;

    let mut stream = EventStream::open(&app.client, &events_url(&app, id, ""), Some("")).await;

    assert_eq!(stream.next().await.unwrap().data["status"], "queued");
    app.stop().await;
}
