//! Records the git commit and build time for `GET /version` and `steward --version`.
//!
//! `STEWARD_GIT_COMMIT` wins when set (the Docker build has no .git directory and passes the
//! commit as a build argument); otherwise git is asked; otherwise "unknown".

use std::process::Command;
use std::time::SystemTime;

fn main() {
    println!("cargo:rerun-if-env-changed=STEWARD_GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("STEWARD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let built = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!("cargo:rustc-env=STEWARD_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=STEWARD_BUILD_UNIX={built}");
}
