//! Stopping on SIGINT or SIGTERM (a terminal's Ctrl-C, `kill`, a service manager).
//!
//! A program installs [`Shutdown`] before it starts connecting, so that a signal during
//! the first connection attempt is seen too, and waits for [`Shutdown::requested`] next to
//! its other work. Work in hand when the signal comes (a message being answered) gets
//! [`GRACE`] to finish and commit; then it is dropped, which the stores are built for (every
//! step is one transaction, and what was not answered is handed over again at the next
//! start).

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long work in hand may go on after a stop request.
pub const GRACE: Duration = Duration::from_secs(3);

/// The SIGINT and SIGTERM handlers.
#[derive(Debug)]
pub struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    /// Installs the handlers: from now on the two signals no longer end the process at
    /// once, they are reported by [`Self::requested`].
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM and returns its name.
    pub async fn requested(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_to_ourselves_are_reported_by_name() -> std::io::Result<()> {
        let mut shutdown = Shutdown::install()?;
        let pid = std::process::id().to_string();
        for (flag, name) in [("-TERM", "SIGTERM"), ("-INT", "SIGINT")] {
            let status = std::process::Command::new("kill")
                .args([flag, &pid])
                .status()?;
            assert!(status.success());
            let seen = tokio::time::timeout(Duration::from_secs(10), shutdown.requested())
                .await
                .map_err(|_| std::io::Error::other(format!("no {name} seen within 10 s")))?;
            assert_eq!(seen, name);
        }
        Ok(())
    }
}
