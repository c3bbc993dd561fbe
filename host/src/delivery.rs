//! Failure classes of a delivery: whether the destination will never take
//! this event (permanent) or may take it later (transient).
//!
//! A queue that retried a permanent refusal for ever would stall every event
//! behind it, so the two are told apart where the failure is known (an HTTP
//! status, an MQTT limit, an encoder error) and the answer travels inside
//! the `anyhow` chain: [`refused`] marks an error permanent, and
//! [`is_permanent`] finds the mark after any amount of added context.

/// The destination refuses this event and always will: retrying it cannot
/// help. Everything else (connection errors, time-outs, 5xx, 408, 429) is
/// transient.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A permanent failure with `reason`.
pub fn refused(reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Refused(reason.into()))
}

/// Whether `error`, or anything it wraps, is a permanent refusal.
pub fn is_permanent(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<Refused>())
}

/// Whether an HTTP endpoint's `status` refuses this request for good: a
/// 4xx other than 408 (request timeout) and 429 (too many requests), which
/// ask the client to come back later, and other than 401 and 403, which
/// refuse the sender's credentials rather than the event: a token that
/// expired must hold the queue until it is fixed, not park every event in
/// it. 413 is permanent.
pub fn http_status_is_permanent(status: http::StatusCode) -> bool {
    use http::StatusCode as S;
    status.is_client_error()
        && !matches!(
            status,
            S::REQUEST_TIMEOUT | S::TOO_MANY_REQUESTS | S::UNAUTHORIZED | S::FORBIDDEN
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_refusal_stays_permanent_under_context_and_other_errors_stay_transient() {
        let wrapped = Err::<(), _>(refused("topic over 65535 bytes"))
            .context("publishing")
            .context("uplink cloud")
            .err();
        assert!(wrapped.as_ref().is_some_and(is_permanent));
        assert!(!is_permanent(&anyhow::anyhow!("connection refused")));
        for (code, permanent) in [
            (400, true),
            (404, true),
            (413, true),
            (422, true),
            (401, false),
            (403, false),
            (408, false),
            (429, false),
            (500, false),
            (503, false),
            (200, false),
        ] {
            let status = http::StatusCode::from_u16(code).ok();
            assert_eq!(
                status.map(http_status_is_permanent),
                Some(permanent),
                "{code}"
            );
        }
    }
}
