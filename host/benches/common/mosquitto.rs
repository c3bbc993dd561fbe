//! A mosquitto for the benches: on a free loopback port, killed on drop;
//! none when mosquitto is not installed. Shared with `#[path]`, since each
//! bench is its own crate.

use std::time::{Duration, Instant};

pub struct Mosquitto {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts one with `extra` appended to its configuration.
    pub fn start(extra: &str) -> Option<Self> {
        let binary = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let config = dir.path().join("mosquitto.conf");
        // Without set_tcp_nodelay, mosquitto's PUBACKs wait for Nagle's
        // algorithm against the peer's delayed ACK (tens of ms each).
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n{extra}"
            ),
        )
        .ok()?;
        let child = std::process::Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mosquitto = Self {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(5) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(mosquitto)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
