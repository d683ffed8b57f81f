//! The messages JetStream holds, read the way an observer would.

use std::time::Duration;

use async_nats::jetstream::consumer::{PullConsumer, pull};
use futures::StreamExt;

/// The messages `consumer` is given by one fetch of at most `max`, waiting at
/// most `expires` for them; a message that fails to arrive ends the list.
pub async fn fetch_messages(
    consumer: &PullConsumer,
    max: usize,
    expires: Duration,
) -> anyhow::Result<Vec<async_nats::jetstream::Message>> {
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .expires(expires)
        .messages()
        .await?;
    let mut out = Vec::new();
    while let Some(Ok(message)) = batch.next().await {
        out.push(message);
    }
    Ok(out)
}

/// The first `max` messages of stream `name` (its full name, namespace
/// included), read by a new pull consumer ([`fetch_messages`]).
pub async fn stream_messages(
    js: &async_nats::jetstream::Context,
    name: &str,
    max: usize,
    expires: Duration,
) -> anyhow::Result<Vec<async_nats::jetstream::Message>> {
    let consumer = js
        .get_stream(name)
        .await?
        .create_consumer(pull::Config::default())
        .await?;
    fetch_messages(&consumer, max, expires).await
}
