//! The dashboard at `/ui`, in real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! which `scripts/test.sh` installs): it loads without console errors, shows jobs as they are
//! submitted, cancels one from the page, shows a worker and a job's detail, and pauses and resumes
//! intake. A screenshot is saved to `target/test-artifacts/ui-dashboard.png`.

use std::{path::PathBuf, process::Stdio};

use fantoccini::{Client, ClientBuilder, Locator, wd::WebDriverCompatibleCommand};
use genq_shared::types::JobStatus;
use genq_tests::{PATIENCE, TestApp, on_free_port, until, until_answers};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// ChromeDriver on a free port in a process group of its own, which is killed when this is
/// dropped (also when the test fails), Chromium with it.
struct Driver {
    url: String,
    child: tokio::process::Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Driver {
    async fn start() -> Driver {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "Chromium and ChromeDriver are missing: run scripts/test.sh (it installs Debian's chromium and chromium-driver)"
        );
        on_free_port(|port| async move {
            let child = tokio::process::Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .expect("starting chromedriver");
            // Made at once, so that a failed start is killed with its process group too.
            let mut driver = Driver {
                url: format!("http://127.0.0.1:{port}"),
                child,
            };
            until_answers(&mut driver.child, &format!("{}/status", driver.url)).await?;
            Ok(driver)
        })
        .await
    }

    async fn browser(&self) -> Client {
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// ChromeDriver's browser log (`POST /session/{id}/se/log`), which holds the console's messages
/// and the page's errors (script errors, refused loads, CSP violations).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.into()),
        )
    }
}

async fn severe_console_entries(browser: &Client) -> Vec<Value> {
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the browser log");
    log.as_array()
        .expect("a list of entries")
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .cloned()
        .collect()
}

/// Loads the dashboard and signs in with `key`.
async fn sign_in(browser: &Client, app: &TestApp, key: &str) {
    browser
        .goto(&format!("{}/ui", app.address))
        .await
        .expect("the page loads");
    browser
        .find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    click(browser, "#sign-in button[type=submit]").await;
}

async fn row_status(browser: &Client, id: uuid::Uuid) -> Option<String> {
    text(browser, &format!("tr[data-task-id='{id}'] td.status")).await
}

async fn text(browser: &Client, css: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/ui-dashboard.png")
}

#[tokio::test]
async fn the_dashboard_shows_jobs_cancels_one_and_pauses_intake_in_chromium_without_console_errors()
{
    let app = TestApp::spawn().await;
    let admin = app.admin_key("ops").await;
    let doomed = app
        .submit(&json!({ "prompts": ["cancel me from the page"], "max_tokens": 8 }))
        .await;
    let tiny = genq_tests::tiny_model_name();
    let alias = ["models", "alias", "split", "--to", &format!("{tiny}=100")];
    genq_tests::assert_exit(&app.genqctl(&alias).await, 0);
    let driver = Driver::start().await;
    let browser = driver.browser().await;

    sign_in(&browser, &app, &admin).await;
    until("the page lists the model and the alias's arm", || async {
        let notes = text(
            &browser,
            &format!("#models tr[data-model='{tiny}'] td:nth-child(6)"),
        )
        .await;
        let weight = text(&browser, "#aliases tr[data-alias='split'] td:nth-child(3)").await;
        notes.as_deref() == Some("default") && weight.as_deref() == Some("100%")
    })
    .await;
    let queued_row = format!("tr[data-task-id='{doomed}'] button.cancel");
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(&queued_row))
        .await
        .expect("the queued job shows with a cancel button")
        .click()
        .await
        .unwrap();
    until("the job is cancelled", || async {
        app.status(doomed).await == JobStatus::Cancelled
    })
    .await;
    until("the page shows it cancelled", || async {
        row_status(&browser, doomed).await.as_deref() == Some("cancelled")
    })
    .await;
    // A worker and a finished job, for the screenshot and the workers table.
    let worker = app.start_worker(2).await;
    let done = app
        .submit(
            &json!({ "prompts": ["Hello from the dashboard test"], "max_tokens": 8, "seed": 1 }),
        )
        .await;
    app.wait_final(done).await;
    until(
        "the page shows the completed job and the worker",
        || async {
            let completed = row_status(&browser, done).await.as_deref() == Some("completed");
            let worker_rows = browser
                .find_all(Locator::Css("#workers tr td"))
                .await
                .map_or(0, |cells| cells.len());
            completed && worker_rows == 6
        },
    )
    .await;
    click(&browser, &format!("tr[data-task-id='{done}'] button.link")).await;
    until("the job's detail shows", || async {
        text(&browser, "#detail-summary").await.as_deref() == Some("completed, 1 of 1 prompts done")
    })
    .await;
    click(&browser, "#intake").await;
    until("intake is paused from the page", || async {
        genq_shared::db::control::intake_paused(&app.pool)
            .await
            .unwrap()
    })
    .await;
    until("the page says so", || async {
        text(&browser, "#intake").await.as_deref() == Some("Resume intake")
    })
    .await;
    click(&browser, "#intake").await;
    until("intake is resumed from the page", || async {
        !genq_shared::db::control::intake_paused(&app.pool)
            .await
            .unwrap()
    })
    .await;
    let queued_figure = text(&browser, "#queued").await.expect("the queued figure");
    let png = browser.screenshot().await.expect("a screenshot");
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    let errors = severe_console_entries(&browser).await;

    assert_eq!(queued_figure, "0");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close().await.unwrap();
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_lists_an_openai_batch_and_cancels_it_in_chromium() {
    let app = TestApp::spawn().await;
    let admin = app.admin_key("ops").await;
    let batch = crate::openai::create_batch(&app, 3).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;

    sign_in(&browser, &app, &admin).await;
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(&format!(
            "tr[data-batch-id='{batch}'] button.cancel"
        )))
        .await
        .expect("the batch shows with a cancel button")
        .click()
        .await
        .unwrap();
    let stored = || async {
        sqlx::query_scalar::<_, String>("select status from openai_batches where id = $1")
            .bind(&batch)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    until("the batch is cancelled", || async {
        stored().await == "cancelled"
    })
    .await;
    let status_cell = format!("tr[data-batch-id='{batch}'] td.status");
    until("the page shows it cancelled", || async {
        text(&browser, &status_cell).await.as_deref() == Some("cancelled")
    })
    .await;
    let total = text(
        &browser,
        &format!("tr[data-batch-id='{batch}'] td:nth-child(5)"),
    )
    .await;
    let errors = severe_console_entries(&browser).await;

    assert_eq!(total.as_deref(), Some("3"));
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close().await.unwrap();
    app.stop().await;
}
