//! MQTT test parts: free loopback ports, an external mosquitto, and real
//! rumqttc clients (MQTT 5 and 3.1.1) that publish and collect messages.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties};
use rumqttc::v5::{self as c5, mqttbytes::QoS};
use tokio::sync::mpsc;

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A mosquitto broker on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` (installed by `.ci/run` from apt) and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        Self::launch(dir, port, "", &[port])
    }

    /// Starts `mosquitto` with `extra` lines of configuration (e.g.
    /// `max_packet_size 4096`).
    pub fn start_with(extra: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        Self::launch(dir, port, extra, &[port])
    }

    /// Starts `mosquitto` with a plain listener on `port` and two TLS
    /// listeners whose certificate `pki` issued: `tls_port` (server
    /// authentication) and `mtls_port` (client certificates required).
    pub fn start_tls(pki: &TestPki) -> anyhow::Result<TlsMosquitto> {
        let dir = tempfile::tempdir()?;
        let (port, tls_port, mtls_port) = (free_port()?, free_port()?, free_port()?);
        let files = |name: &str| pki.dir.path().join(name).display().to_string();
        let tls = |p: u16| {
            format!(
                "listener {p} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                files("ca.pem"),
                files("server.pem"),
                files("server.key")
            )
        };
        let extra = format!(
            "{}{}require_certificate true\n",
            tls(tls_port),
            tls(mtls_port)
        );
        let broker = Self::launch(dir, port, &extra, &[port, tls_port, mtls_port])?;
        Ok(TlsMosquitto {
            broker,
            tls_port,
            mtls_port,
        })
    }

    fn launch(
        dir: tempfile::TempDir,
        port: u16,
        extra: &str,
        wait_for: &[u16],
    ) -> anyhow::Result<Self> {
        let conf: PathBuf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\nmax_inflight_messages 100\nmax_queued_messages 100000\nset_tcp_nodelay true\nlistener {port} 127.0.0.1\n{extra}"
            ),
        )?;
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| !b.contains('/') || std::path::Path::new(b).exists())
            .unwrap_or("mosquitto");
        // Its log goes to a file: a pipe nobody drains would fill and stall the broker.
        let log = dir.path().join("mosquitto.log");
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto)")?;
        let started = Instant::now();
        for &p in wait_for {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    let err = std::fs::read_to_string(&log).unwrap_or_default();
                    bail!("mosquitto exited ({status}): {err}");
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("mosquitto did not listen on {p} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self {
            port,
            child,
            _dir: dir,
        })
    }
}

/// A mosquitto with TLS listeners besides its plain one.
#[derive(Debug)]
pub struct TlsMosquitto {
    /// The broker; its plain listener is `broker.port`.
    pub broker: Mosquitto,
    pub tls_port: u16,
    pub mtls_port: u16,
}

/// A test CA, a server certificate for 127.0.0.1 and a client certificate,
/// as PEM files in a temporary folder: `ca.pem`, `server.pem`/`server.key`,
/// `client.pem`/`client.key`, and `other-ca.pem` (a CA that issued nothing here).
#[derive(Debug)]
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir()?;
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text);
        let ca = |name: &str| -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            Ok((params.self_signed(&key)?, key))
        };
        let (ca_cert, ca_key) = ca("brink test CA")?;
        let (other_ca, _) = ca("some other CA")?;
        let leaf = |names: Vec<String>, cn: &str| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], "broker")?;
        let (client, client_key) = leaf(vec!["gateway-7".into()], "gateway-7")?;
        write("ca.pem", ca_cert.pem())?;
        write("other-ca.pem", other_ca.pem())?;
        write("server.pem", server)?;
        write("server.key", server_key)?;
        write("client.pem", client)?;
        write("client.key", client_key)?;
        Ok(Self { dir })
    }

    /// The path of one of the files, as a TOML string.
    pub fn path(&self, name: &str) -> String {
        format!("{:?}", self.dir.path().join(name).display().to_string())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_acked(acked: &mut mpsc::UnboundedReceiver<u16>, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(20), acked.recv())
            .await
            .context("no PUBACK")?;
    }
    Ok(())
}

/// A message a test client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
    pub user_properties: Vec<(String, String)>,
}

impl Received {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

/// An MQTT 5 client: publishes with properties, and receives on `messages`.
#[derive(Debug)]
pub struct Client5 {
    client: c5::AsyncClient,
    pub messages: mpsc::UnboundedReceiver<Received>,
    acked: mpsc::UnboundedReceiver<u16>,
}

impl Client5 {
    /// Connects to `127.0.0.1:port` and subscribes to `filters` (QoS 1).
    pub async fn connect(port: u16, filters: &[&str]) -> anyhow::Result<Self> {
        let id = format!("test-{}", free_port()?);
        let mut options = c5::MqttOptions::new(id, "127.0.0.1", port);
        options.set_max_packet_size(Some(2 << 20));
        let (client, mut eventloop) = c5::AsyncClient::new(options, 100_000);
        let (tx, messages) = mpsc::unbounded_channel();
        let (ack_tx, acked) = mpsc::unbounded_channel();
        let (sub_tx, mut subscribed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(c5::Event::Incoming(c5::Incoming::Publish(p))) => {
                        let (content_type, user_properties) = p
                            .properties
                            .map(|pr| (pr.content_type, pr.user_properties))
                            .unwrap_or_default();
                        let _ = tx.send(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            content_type,
                            user_properties,
                        });
                    }
                    Ok(c5::Event::Incoming(c5::Incoming::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(c5::Event::Incoming(c5::Incoming::PubAck(ack))) => {
                        let _ = ack_tx.send(ack.pkid);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        if !filters.is_empty() {
            client
                .subscribe_many(
                    filters
                        .iter()
                        .map(|f| Filter::new((*f).to_owned(), QoS::AtLeastOnce)),
                )
                .await?;
            tokio::time::timeout(Duration::from_secs(10), subscribed.recv())
                .await
                .context("no SUBACK")?;
        }
        Ok(Self {
            client,
            messages,
            acked,
        })
    }

    /// Publishes at QoS 1 with a content type and user properties.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        content_type: Option<&str>,
        user_properties: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let properties = PublishProperties {
            content_type: content_type.map(str::to_owned),
            user_properties: user_properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), properties)
            .await?;
        Ok(())
    }

    /// Waits until the broker acknowledged `n` publishes.
    pub async fn wait_acked(&mut self, n: usize) -> anyhow::Result<()> {
        wait_acked(&mut self.acked, n).await
    }

    /// Whether a PUBACK arrives within `millis`.
    pub async fn acked_within(&mut self, millis: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(millis), self.acked.recv())
            .await
            .is_ok_and(|a| a.is_some())
    }

    /// The next message, within `secs` seconds.
    pub async fn next(&mut self, secs: u64) -> anyhow::Result<Received> {
        tokio::time::timeout(Duration::from_secs(secs), self.messages.recv())
            .await
            .context("no message arrived")?
            .context("client closed")
    }

    /// Collects messages until `n` arrived or `secs` passed.
    pub async fn collect(&mut self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) => out.push(m),
                _ => break,
            }
        }
        out
    }

    /// Whether a message arrives within `millis`.
    pub async fn quiet_for(&mut self, millis: u64) -> Option<Received> {
        tokio::time::timeout(Duration::from_millis(millis), self.messages.recv())
            .await
            .ok()
            .flatten()
    }
}

/// An MQTT 3.1.1 device: publishes at QoS 1, and receives on `messages`.
#[derive(Debug)]
pub struct Client311 {
    client: rumqttc::AsyncClient,
    acked: mpsc::UnboundedReceiver<u16>,
    pub messages: mpsc::UnboundedReceiver<Received>,
}

impl Client311 {
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        Self::subscribed(port, &[]).await
    }

    /// Connects and subscribes to `filters` (QoS 1).
    pub async fn subscribed(port: u16, filters: &[&str]) -> anyhow::Result<Self> {
        let id = format!("device-{}", free_port()?);
        let (client, mut eventloop) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new(id, "127.0.0.1", port), 100_000);
        let (ack_tx, acked) = mpsc::unbounded_channel();
        let (tx, messages) = mpsc::unbounded_channel();
        let (sub_tx, mut subscribed) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(ack))) => {
                        let _ = ack_tx.send(ack.pkid);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            content_type: None,
                            user_properties: Vec::new(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for filter in filters {
            client.subscribe(*filter, rumqttc::QoS::AtLeastOnce).await?;
            tokio::time::timeout(Duration::from_secs(10), subscribed.recv())
                .await
                .context("no SUBACK")?;
        }
        Ok(Self {
            client,
            acked,
            messages,
        })
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) -> anyhow::Result<()> {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await?;
        Ok(())
    }

    /// Waits until the broker acknowledged `n` publishes.
    pub async fn wait_acked(&mut self, n: usize) -> anyhow::Result<()> {
        wait_acked(&mut self.acked, n).await
    }
}
