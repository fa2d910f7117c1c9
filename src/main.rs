//! The `warren` binary: parses flags and the config file, sets up logging, runs the broker
//! until SIGINT or SIGTERM, and reloads the TLS certificates on SIGHUP; or, as
//! `warren ctl`, manages a running broker.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use warren::tls::Tls;
use warren::{Cli, Server};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(warren::config::Command::Ctl(args)) = cli.command.take() {
        return match warren::ctl::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let exit_on_stdin_close = cli.exit_on_stdin_close;
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warren: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|e| {
        eprintln!("warren: invalid log filter '{}': {e}; using 'info'", config.log_level);
        EnvFilter::new("info")
    });
    // Logs go to stderr (stdout is for output a script reads), coloured only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).with_ansi(ansi).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    // With port 0 the ports are known only once bound: tell whoever started us.
    let announce = config.port == 0 || config.free_ports;
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        info!(
            address = ?server.local_addr().ok(),
            tls_address = ?server.tls_addr(),
            metrics = ?server.metrics_addr(),
            management = ?server.management_addr(),
            version = env!("CARGO_PKG_VERSION"),
            "Warren is ready"
        );
        if announce {
            // The one line a fixture reads (logs go to stderr).
            println!("{}", server.ready_line());
        }
        tokio::spawn(reload_on_sighup(server.tls()));
        let stdin_closed = stdin_closed(exit_on_stdin_close);
        server.run(async move {
            tokio::select! {
                () = shutdown_signal() => {}
                () = stdin_closed => info!("stdin closed; shutting down"),
            }
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// With `--exit-on-stdin-close`, resolves when stdin reaches its end (the parent closed
/// it or exited); otherwise never.
async fn stdin_closed(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: reading stdin blocks, and the broker never reads it otherwise.
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while std::io::Read::read(&mut stdin, &mut sink).is_ok_and(|n| n > 0) {}
        let _ = tx.send(());
    });
    let _ = rx.await;
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    info!("shutdown signal received");
}

/// Rereads the TLS certificate, key and client CAs on each SIGHUP. Installed even without
/// TLS, so that a SIGHUP (a habit with daemons) does not terminate the broker.
async fn reload_on_sighup(tls: Option<Arc<Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot handle SIGHUP; TLS certificates will not be reloaded");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            let Some(tls) = &tls else {
                info!("SIGHUP: TLS is not configured, nothing to reload");
                continue;
            };
            let tls = Arc::clone(tls);
            // Reading files is blocking work: keep it off the async workers.
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(Ok(())) => info!("SIGHUP: TLS certificate, key and client CAs reloaded; new connections use them"),
                Ok(Err(e)) => error!(error = %e, "SIGHUP: TLS reload failed; keeping the certificates in use"),
                Err(e) => error!(error = %e, "SIGHUP: TLS reload did not finish"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}
