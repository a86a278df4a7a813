//! Reading a job's Server-Sent Events as a client does.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::Value;

use crate::PATIENCE;

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// An open event stream.
pub struct EventStream {
    events: futures::stream::BoxStream<'static, Option<SseEvent>>,
}

impl EventStream {
    /// Opens `url`, failing the test unless it answers 200 with an event stream.
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("opening the event stream");
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|event| {
                let event = event.ok()?;
                Some(SseEvent {
                    id: event.id,
                    data: serde_json::from_str(&event.data).expect("event data is JSON"),
                    event: event.event,
                })
            })
            .boxed();
        EventStream { events }
    }

    /// The next event, or `None` when the stream ends; fails the test after [`PATIENCE`].
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("an event within the patience")
            .flatten()
    }

    /// Every event until the stream ends.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(event) = self.next().await {
            all.push(event);
        }
        all
    }
}
