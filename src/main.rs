//! The `warren` binary: parses flags and the config file, sets up logging, runs the broker
//! until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;
use warren::{Cli, Server};

fn main() -> ExitCode {
    let config = match Cli::parse().load() {
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
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = (config.bind, config.port);
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, bind = %addr.0, port = addr.1, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(local) = server.local_addr() {
            info!(address = %local, metrics = ?server.metrics_addr(), version = env!("CARGO_PKG_VERSION"), "Warren is ready");
        }
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
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
