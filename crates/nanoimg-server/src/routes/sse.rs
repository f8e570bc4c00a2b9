//! Server-sent event streams fed by a task (shared by the image and job routes).

use axum::response::sse::Event;

/// A stream fed by a task through a channel; the task stops when the client goes away.
pub(crate) fn channel<F, Fut>(
    f: F,
) -> impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

/// One named event with a JSON body.
pub(crate) fn event(name: &str, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}
