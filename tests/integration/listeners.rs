//! The listeners against slow, flooding and malformed clients: a request
//! head that trickles is cut off at `[http] header_timeout_s`, a body at
//! `body_timeout_s` (408), connections past `max_connections` get 503, and
//! a storm of malformed requests leaves the node serving everyone else.

use std::time::{Duration, Instant};

use brink_tests::artifacts;
use brink_tests::assert_problem;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `echo` on the HTTP listener with the given `[http]` lines.
async fn node(http: &str) -> anyhow::Result<(brink_host::node::Node, String)> {
    let text = format!(
        "brink_manifest_version = 1\n[http]\nlisten = \"127.0.0.1:0\"\n{http}\n\n[function.echo]\nsource = {:?}\ntriggers = [{{ http = \"/echo\" }}]\n",
        artifacts::ECHO
    );
    let node = brink_tests::start_node(&text).await?;
    let addr = node.http_addr().to_string();
    Ok((node, addr))
}

/// Everything the server sends until it closes, or an error when it is
/// still open after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the server kept the connection open for {within:?}"))?;
    Ok(got)
}

const EVENT: &str = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"v":1}}"#;

async fn post_event(client: &reqwest::Client, addr: &str) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("http://{addr}/events/echo"))
        .header("content-type", "application/cloudevents+json")
        .body(EVENT)
        .send()
        .await
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_header_timeout_s() -> anyhow::Result<()>
{
    let (node, addr) = node("header_timeout_s = 1").await?;
    let mut stream = TcpStream::connect(&addr).await?;
    let started = Instant::now();
    // A slowloris: a valid head, one byte every 100 ms, never finished.
    let head = b"POST /events/echo HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (mut read, mut write) = stream.split();
    let drip = async {
        for byte in head {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Out of bytes to drip: the server has not cut the client off.
        std::future::pending::<()>().await;
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = drip => {}
        () = closed => {}
        () = tokio::time::sleep(Duration::from_secs(8)) => {}
    }
    let held = started.elapsed();
    anyhow::ensure!(
        held < Duration::from_secs(5),
        "a trickling request head held its connection for {held:?}"
    );
    // The node still serves well-behaved clients.
    let answer = post_event(&brink_tests::http(), &addr).await?;
    anyhow::ensure!(answer.status().is_success(), "{}", answer.status());
    node.shutdown().await
}

#[tokio::test]
async fn an_idle_connection_that_sends_nothing_is_closed_at_header_timeout_s() -> anyhow::Result<()>
{
    let (node, addr) = node("header_timeout_s = 1").await?;
    let mut stream = TcpStream::connect(&addr).await?;
    until_closed(&mut stream, Duration::from_secs(5)).await?;
    node.shutdown().await
}

#[tokio::test]
async fn a_request_body_that_trickles_is_answered_408_naming_body_timeout_s() -> anyhow::Result<()>
{
    let (node, addr) = node("body_timeout_s = 1").await?;
    let mut stream = TcpStream::connect(&addr).await?;
    stream
        .write_all(b"POST /events/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 100\r\n\r\n{\"specversion\"")
        .await?;
    // ...and the other 86 bytes never come.
    let answer = until_closed(&mut stream, Duration::from_secs(5)).await?;
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    anyhow::ensure!(answer.contains("application/problem+json"), "{answer}");
    anyhow::ensure!(answer.contains("[http] body_timeout_s"), "{answer}");
    node.shutdown().await
}

#[tokio::test]
async fn connections_past_max_connections_get_503_and_service_resumes_when_they_close()
-> anyhow::Result<()> {
    let (node, addr) = node("max_connections = 4").await?;
    // Four connections that say nothing hold every slot...
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&addr).await?);
    }
    // ...so a flood of others is refused, each at once, with a problem.
    let mut refused = 0;
    for _ in 0..50 {
        let mut flood = TcpStream::connect(&addr).await?;
        let _ = flood
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let answer = until_closed(&mut flood, Duration::from_secs(5)).await?;
        let answer = String::from_utf8_lossy(&answer);
        if answer.starts_with("HTTP/1.1 503") {
            anyhow::ensure!(answer.contains("[http] max_connections"), "{answer}");
            refused += 1;
        }
    }
    // A connection the node had not accepted yet when one of the first
    // four connected may still take a slot; the rest are refused.
    anyhow::ensure!(
        refused >= 45,
        "only {refused} of 50 connections over the limit were refused"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let refused = match post_event(&client, &addr).await {
        Ok(r) => r,
        Err(e) => anyhow::bail!("{e:?}"),
    };
    assert_problem(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "at most 4 connections",
    )
    .await?;
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = post_event(&client, &addr).await?;
        if answer.status().is_success() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "still {} after the idle ones closed",
            answer.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await
}

#[test]
fn the_listener_limits_must_be_above_zero() {
    for field in ["max_connections", "header_timeout_s", "body_timeout_s"] {
        let text = format!("brink_manifest_version = 1\n[http]\n{field} = 0\n");
        let err = brink_host::manifest::Manifest::parse(&text, "brink.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains(&format!("http.{field}: must be above 0")),
            "{field}: {err}"
        );
    }
}

/// A small deterministic generator (xorshift64*), so a failing storm can
/// be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Requests a node sees from real clients, to mutate.
const SEEDS: &[&str] = &[
    "POST /events/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 71\r\n\r\n{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":{\"v\":1}}",
    "POST /events/echo HTTP/1.1\r\nhost: x\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: /s\r\nce-type: t\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"v\":1}",
    "POST /functions/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents-batch+json\r\ntransfer-encoding: chunked\r\n\r\n4\r\n[{}]\r\n0\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
    "GET /metrics HTTP/1.0\r\n\r\n",
];

/// One malformed request: a seed with bytes flipped, inserted, repeated or
/// cut, or a header or body blown up.
fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut req = SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(req.len() + 1);
        match rng.below(7) {
            0 if at < req.len() => req[at] ^= 1 << rng.below(8),
            1 => req.insert(at, rng.next() as u8),
            2 => req.truncate(at),
            3 => {
                let junk = [
                    b"\r\n" as &[u8],
                    b":",
                    b" ",
                    b"\0",
                    b"%",
                    b"\"",
                    b"chunked",
                    b"999999999999",
                ];
                let piece = junk[rng.below(junk.len())];
                req.splice(at..at, piece.iter().copied());
            }
            4 => {
                let line = format!("x-big: {}\r\n", "a".repeat(rng.below(200_000)));
                let head = req
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(0, |p| p + 2);
                req.splice(head..head, line.bytes());
            }
            5 => {
                let n = rng.below(64);
                let piece: Vec<u8> = req[at..].iter().take(n).copied().collect();
                req.splice(at..at, piece);
            }
            _ => req.extend(std::iter::repeat_n(b'{', rng.below(10_000))),
        }
    }
    req
}

#[tokio::test]
async fn a_storm_of_malformed_requests_leaves_the_node_serving() -> anyhow::Result<()> {
    // `just fuzz-http` runs a longer storm with BRINK_HTTP_STORM=N.
    let count: usize = std::env::var("BRINK_HTTP_STORM")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let seed = std::env::var("BRINK_HTTP_STORM_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5EED_B41C);
    let (node, addr) = node("header_timeout_s = 2\nbody_timeout_s = 2\nmax_body_kb = 64").await?;
    let mut rng = Rng(seed);
    let mut answered = [0usize; 6];
    for i in 0..count {
        let request = mutate(&mut rng);
        let mut stream = TcpStream::connect(&addr).await?;
        let _ = stream.write_all(&request).await;
        // Half-closed: the node answers what it read, then closes.
        let _ = stream.shutdown().await;
        let answer = until_closed(&mut stream, Duration::from_secs(10))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "request {i} of seed {seed}: {e}\n{:?}",
                    String::from_utf8_lossy(&request)
                )
            })?;
        let class = answer
            .strip_prefix(b"HTTP/1.1 ")
            .and_then(|rest| rest.first())
            .map_or(0, |d| usize::from(d.saturating_sub(b'0')).min(5));
        answered[class] += 1;
        anyhow::ensure!(
            !answer.starts_with(b"HTTP/1.1 5"),
            "request {i} of seed {seed} got a server error:\n{}\nfor {:?}",
            String::from_utf8_lossy(&answer),
            String::from_utf8_lossy(&request)
        );
    }
    eprintln!(
        "{count} malformed requests (seed {seed}): no answer {}, 2xx {}, 4xx {}",
        answered[0], answered[2], answered[4]
    );
    let answer = post_event(&brink_tests::http(), &addr).await?;
    anyhow::ensure!(answer.status().is_success(), "{}", answer.status());
    node.shutdown().await
}
