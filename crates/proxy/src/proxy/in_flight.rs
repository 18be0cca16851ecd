//! Requests being served right now: shutdown waits for this to reach zero, and it is the
//! `tandem_requests_in_flight` gauge (one atomic per request in and out).

use prometheus::IntGauge;

#[derive(Clone, Debug)]
pub struct InFlight {
    /// Made once per tier and never freed, so a request's guard holds a plain reference: no
    /// reference count to bump on a shared cache line per request.
    gauge: &'static IntGauge,
}

impl InFlight {
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            gauge: Box::leak(Box::new(gauge)),
        }
    }

    pub fn count(&self) -> usize {
        usize::try_from(self.gauge.get()).unwrap_or(0)
    }

    pub(crate) fn enter(&self) -> InFlightGuard {
        self.gauge.inc();
        InFlightGuard(self.gauge)
    }
}

/// Counts one request as in flight until dropped with the request's context.
pub struct InFlightGuard(&'static IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_guards_live() {
        let f = InFlight::new(IntGauge::new("g", "h").unwrap());
        let a = f.enter();
        let b = f.enter();
        assert_eq!(f.count(), 2);
        drop(a);
        drop(b);
        assert_eq!(f.count(), 0);
    }
}
