//! W3C `traceparent` in and out of the current tracing span.
//!
//! Formatting it here rather than through the global propagator keeps the header
//! present whether or not the service registered one.

use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current span, when it belongs to an OpenTelemetry trace.
pub(crate) fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    format_traceparent(span.span_context())
}

pub(crate) fn format_traceparent(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Parses a W3C `traceparent`; `None` when it is malformed or all zero.
pub(crate) fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four fields; later versions may append more.
    if version.len() != 2
        || version == "ff"
        || (version == "00" && parts.next().is_some())
        || trace_id.len() != 32
        || span_id.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    u8::from_str_radix(version, 16).ok()?;
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the remote span named by `traceparent`, when there is one.
pub(crate) fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(sc) = traceparent.and_then(parse_traceparent) else {
        return;
    };
    let cx = Context::new().with_remote_span_context(sc);
    // Without an OpenTelemetry layer there is no trace to continue; that is not an error.
    if let Err(error) = span.set_parent(cx) {
        tracing::trace!(%error, "trace context not attached to span");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_traceparent() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(value).expect("valid traceparent");
        assert!(sc.is_remote());
        assert!(sc.is_sampled());
        assert_eq!(format_traceparent(&sc).as_deref(), Some(value));
    }

    #[test]
    fn rejects_malformed_traceparents() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn no_traceparent_outside_a_trace() {
        assert_eq!(current_traceparent(), None);
    }
}
