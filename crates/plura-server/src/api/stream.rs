//! The live stream of fleet changes (server-sent events), for the console.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use plura_proto::Change;

use crate::auth::{Auth, CALLER_TTL};
use crate::fleet::Published;

use super::{ApiError, ApiResult, AppState, Monitor, bearer};

/// When a caller refused a stream may try again.
const RETRY_STREAM: Duration = Duration::from_secs(30);
/// Live streams open at once, in all and per credential (a console tab holds one).
pub const MAX_STREAMS: usize = 1000;
pub const MAX_STREAMS_PER_CREDENTIAL: usize = 32;

/// Each change as an event named after its kind (`login`, `stopped`, …) with a `Change` as
/// JSON data. A reader that falls too far behind gets a `resync` event: reload the list. The
/// stream ends when its credential does (revoked, expired, its user disabled), as a request
/// made with it then would be refused.
#[utoipa::path(
    get, path = "/api/v1/events/stream", tag = "fleet",
    responses(
        (status = 200, content_type = "text/event-stream", body = Change),
        (status = 429, description = "Too many live streams open, for this credential or in all", body = plura_proto::ErrorBody),
    ),
    security(("api_token" = ["monitor"]))
)]
pub async fn changes(
    Monitor(caller): Monitor,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let slot = state
        .streams
        .take(&caller.name)
        .map_err(|why| ApiError::too_many(RETRY_STREAM, format!("no more live streams: {why}")))?;
    let shutdown = state.shutdown.clone();
    let credential_ended = credential_ended(state.auth.clone(), bearer(&headers)?.to_string());
    let events = BroadcastStream::new(state.fleet.subscribe())
        .map(move |change| {
            // The slot is the stream's for as long as it is open.
            let _held = &slot;
            Ok(match change {
                Ok(Published::Resync) => Event::default().event("resync").data("missed"),
                Ok(Published::Change(change)) => Event::default()
                    .event(change.event.as_str())
                    .json_data(&change)
                    .unwrap_or_else(|_| Event::default().event("resync")),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Event::default().event("resync").data(missed.to_string())
                }
            })
        })
        .take_until(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = credential_ended => {}
            }
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Done once `token` no longer admits anyone; looked at as often as the credential cache
/// forgets. A database that cannot answer ends nothing.
async fn credential_ended(auth: Arc<Auth>, token: String) {
    loop {
        tokio::time::sleep(CALLER_TTL).await;
        if let Ok(None) = auth.caller(&token).await {
            return;
        }
    }
}
