//! `cccgate watch`: the gateway's change feed (spec/watch.md) as JSON lines on stdout.

use std::time::Duration;

use anyhow::Context;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// Resume after this snapshot sequence (the `sequence` of the last line you handled);
    /// 0: from now. Older than the gateway's history: refused, re-check everything with
    /// `cccgate replay` and start again from 0.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Stop after this many seconds (default: until Ctrl-C or the gateway ends the stream).
    #[arg(long, value_name = "SECONDS")]
    watch_for: Option<f64>,
    #[command(flatten)]
    caller: crate::caller::CallerArgs,
}

/// Completes on Ctrl-C or after `limit`, whichever comes first.
pub async fn stop_signal(limit: Option<Duration>) {
    let timer = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = timer => {}
    }
}

/// `--watch-for` as a duration.
pub fn watch_for(seconds: Option<f64>) -> anyhow::Result<Option<Duration>> {
    seconds
        .map(|s| Duration::try_from_secs_f64(s).with_context(|| format!("--watch-for {s}")))
        .transpose()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let limit = watch_for(args.watch_for)?;
    let credentials = args.caller.credentials()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let n = rt.block_on(async {
        let mut out = std::io::stdout();
        cccgate_client::watch::follow_changes(
            &args.target,
            &credentials,
            args.from,
            &mut out,
            stop_signal(limit),
        )
        .await
    })?;
    eprintln!("{n} batches");
    Ok(())
}
