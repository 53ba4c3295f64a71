//! Running the Node.js clients of `examples/node` and `tests/node` from a test.
//!
//! Their packages come from npm (`npm ci` in each folder; `.ci/run` does it). Without `node`
//! or the packages a test is skipped with the command that installs them, unless `CI` is
//! set: in CI it fails instead, so a missing install never passes quietly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `dir` (relative to the root) if `node` runs and its packages are installed; `None` (the
/// test should return, skipped) when they are not and `CI` is not set. Panics under CI.
pub fn node_dir(dir: &str) -> Option<PathBuf> {
    let dir = root().join(dir);
    let node = Command::new("node").arg("--version").output();
    let problem = match node {
        Err(e) => Some(format!("node is not runnable ({e})")),
        Ok(o) if !o.status.success() => Some("node --version failed".to_string()),
        Ok(_) if !dir.join("node_modules").is_dir() => Some(format!(
            "the packages are not installed: cd {} && npm ci",
            dir.display()
        )),
        Ok(_) => None,
    };
    match problem {
        None => Some(dir),
        Some(p) if std::env::var_os("CI").is_some() => panic!("CI is set and {p}"),
        Some(p) => {
            eprintln!("SKIPPED (CI is not set): {p}");
            None
        }
    }
}

/// Runs `node SCRIPT ARGS...` in `dir`, killed after `limit`; returns its output.
pub fn run_node(dir: &Path, script: &str, args: &[&str], limit: Duration) -> Output {
    run_bounded(
        Command::new("node").current_dir(dir).arg(script).args(args),
        limit,
    )
}

/// Runs `cmd`, killed after `limit`; returns its output.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Read both pipes as they fill, so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{cmd:?} did not finish in {limit:?}; stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
