//! Graceful shutdown as an orchestrator expects it: on SIGTERM readiness fails at once (so the
//! endpoint is taken out of rotation), the listeners keep accepting for `shutdown_delay` while
//! that propagates, then stop; in-flight requests get up to `shutdown_grace` to finish. SIGINT
//! stops at once (within a second).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use crate::proxy::InFlight;
use crate::publish::Health;

/// How long a SIGINT (fast shutdown) may take before the process exits regardless.
const FAST_SHUTDOWN_BOUND: Duration = Duration::from_secs(1);

pub struct DrainOnTerm {
    pub health: Health,
    pub in_flight: InFlight,
    pub delay: Duration,
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                // pingora's fast shutdown can leave an accept loop spinning on a runtime being
                // shut down and never return; a fast stop must stay fast.
                std::thread::spawn(|| {
                    std::thread::sleep(FAST_SHUTDOWN_BOUND);
                    tracing::warn!("fast shutdown still running after {FAST_SHUTDOWN_BOUND:?}; exiting");
                    std::process::exit(0);
                });
                return ShutdownSignal::FastShutdown;
            }
        }
        self.health.start_draining();
        tracing::info!(
            delay_s = self.delay.as_secs_f64(),
            grace_s = self.grace.as_secs_f64(),
            "SIGTERM: readiness off; still accepting during the shutdown delay"
        );
        tokio::time::sleep(self.delay).await;
        tracing::info!(
            in_flight = self.in_flight.count(),
            "shutdown delay over; listeners close"
        );
        // pingora now stops accepting and waits out the grace period; exit as soon as the
        // requests in flight are done instead of sleeping through it.
        let in_flight = self.in_flight.clone();
        let grace = self.grace;
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut idle_checks = 0;
            while start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(100));
                // Two idle checks in a row: a request accepted just before close gets its ctx.
                idle_checks = if in_flight.count() == 0 {
                    idle_checks + 1
                } else {
                    0
                };
                if idle_checks >= 3 {
                    tracing::info!(
                        took_ms = start.elapsed().as_millis() as u64,
                        "drained; exiting"
                    );
                    std::process::exit(0);
                }
            }
            tracing::warn!(
                in_flight = in_flight.count(),
                "shutdown grace over; exiting with requests in flight"
            );
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}
