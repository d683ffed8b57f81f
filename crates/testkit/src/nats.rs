//! JetStream streams a run leaves behind.

/// Deletes the JetStream streams of `namespace` (`<namespace>_<STREAM>`) on
/// the server at `url`; nothing happens where it cannot be reached.
pub async fn delete_streams(url: &str, namespace: &str) {
    use futures::StreamExt;
    let Ok(client) = async_nats::connect(url).await else {
        return;
    };
    let jetstream = async_nats::jetstream::new(client);
    let prefix = format!("{namespace}_");
    let mut names = jetstream.stream_names();
    let mut ours = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        if name.starts_with(&prefix) {
            ours.push(name);
        }
    }
    for name in ours {
        let _ = jetstream.delete_stream(&name).await;
    }
}
