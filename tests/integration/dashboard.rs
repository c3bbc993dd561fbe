//! The web dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver's W3C WebDriver protocol. `scripts/test` installs
//! both and sets `BRINK_REQUIRE_BROWSER=1`, so there a missing browser fails
//! this test instead of skipping it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use brink_tests::artifacts;
use serde_json::{Value, json};

use crate::deploy::host;

/// The W3C WebDriver web element identifier.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver and one headless chromium session; both end when dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Browser {
    /// `None` where chromium or chromedriver is missing (and not required).
    async fn start() -> anyhow::Result<Option<Self>> {
        if !installed("chromedriver") || !installed("chromium") {
            anyhow::ensure!(
                std::env::var_os("BRINK_REQUIRE_BROWSER").is_none(),
                "BRINK_REQUIRE_BROWSER is set but chromium or chromedriver is missing (apt install chromium chromium-driver)"
            );
            eprintln!(
                "skipped: no chromium and chromedriver (apt install chromium chromium-driver)"
            );
            return Ok(None);
        }
        let port = brink_tests::mqtt::free_port()?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let profile = tempfile::tempdir()?;
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: brink_tests::http(),
            _profile: profile,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while browser
            .http
            .get(format!("{}/status", browser.base))
            .send()
            .await
            .is_err()
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The flags the machines' notes give for a closed network.
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1100",
        ];
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": which("chromium")?, "args": args },
        }}});
        let session = browser.command("POST", "/session", capabilities).await?;
        browser.session = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no session: {session}"))?
            .to_owned();
        Ok(Some(browser))
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let request = match method {
            "GET" => self.http.get(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        };
        let answer: Value = serde_json::from_slice(&request.send().await?.bytes().await?)?;
        anyhow::ensure!(
            answer["value"]["error"].is_null(),
            "webdriver {path}: {answer}"
        );
        Ok(answer["value"].clone())
    }

    async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "/url", json!({ "url": url }))
            .await
            .map(drop)
    }

    async fn all(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let found = self
            .command(
                "POST",
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await?;
        Ok(found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sends `method` `/element/<id>/<what>` to the first element `css`
    /// matches; `None` when none does. The dashboard redraws its tables
    /// every second, so the element found may be gone by the time the
    /// command reaches it ("stale element reference"): then it is found
    /// again.
    async fn on_first(
        &self,
        css: &str,
        (method, what): (&str, &str),
        body: Value,
    ) -> anyhow::Result<Option<Value>> {
        let mut tries = 0;
        loop {
            let Some(element) = self.all(css).await?.into_iter().next() else {
                return Ok(None);
            };
            let path = format!("/element/{element}/{what}");
            match self.command(method, &path, body.clone()).await {
                Ok(value) => return Ok(Some(value)),
                Err(e) if tries < 10 && e.to_string().contains("stale element") => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn text(&self, css: &str) -> anyhow::Result<String> {
        let text = self.on_first(css, ("GET", "text"), Value::Null).await?;
        Ok(text
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default())
    }

    async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.on_first(css, ("POST", "click"), json!({}))
            .await?
            .map(drop)
            .ok_or_else(|| anyhow::anyhow!("no element {css}"))
    }

    async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.element(css).await?;
        self.command("POST", &format!("/element/{element}/clear"), json!({}))
            .await?;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await
        .map(drop)
    }

    async fn element(&self, css: &str) -> anyhow::Result<String> {
        self.all(css)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no element {css}"))
    }

    /// Waits until the text of `css` satisfies `ok`; its last text.
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(css).await?;
            if ok(&text) {
                return Ok(text);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{css} never matched; it reads {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let png = self.command("GET", "/screenshot", Value::Null).await?;
        Ok(base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default())?)
    }
}

fn which(program: &str) -> anyhow::Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

#[tokio::test]
async fn a_tenant_signs_in_sees_its_function_its_counters_rise_and_its_log_arrive()
-> anyhow::Result<()> {
    let Some(browser) = Browser::start().await? else {
        return Ok(());
    };
    // An uplink whose cloud is down, and a gpu model on the CPU: the page
    // shows both as they are.
    let down = brink_tests::mqtt::free_port()?;
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/digits/digits.onnx");
    let extra = format!(
        "[registry]\n[uplink.cloud]\nhttp = \"http://127.0.0.1:{down}/ingest\"\n[model.digits]\npath = {:?}\ntarget = \"gpu\"\nfallback = \"cpu\"\n",
        model.display().to_string()
    );
    let h = host(&extra, None).await?;
    let grants = json!({ "uplinks": ["cloud"], "models": ["digits"] });
    let acme = h.tenant("acme", json!({}), grants).await?;
    let bolt = h.tenant("bolt", json!({}), json!({})).await?;
    let spec = json!({ "config": { "threshold": "10", "direction": "above" } });
    for (token, name) in [(&acme, "filter"), (&bolt, "secret-filter")] {
        let (status, body) = h
            .deploy(
                token,
                name,
                "1.0.0",
                artifacts::FILTER,
                spec.clone(),
                json!([]),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
    }
    h.invoke(&bolt, "secret-filter", 20.0).await?;

    // A wrong token is refused on the page, and nothing is shown.
    browser.goto(&format!("{}/", h.admin)).await?;
    browser.type_into("#token", "brink_00000000_wrong").await?;
    browser.click("#signin").await?;
    browser
        .wait_text("#signin-error", |t| t.contains("Not signed in"))
        .await?;
    // The tenant's own token: its function, and none of its neighbour's.
    browser.type_into("#token", &acme).await?;
    browser.click("#signin").await?;
    browser.wait_text("#who", |t| t == "tenant acme").await?;
    let row = "tr[data-function=\"acme/filter\"]";
    browser
        .wait_text(row, |t| t.contains("filter") && t.contains("1.0.0"))
        .await?;
    assert!(
        browser
            .all("tr[data-function^=\"bolt/\"]")
            .await?
            .is_empty()
    );
    assert!(!browser.text("#functions").await?.contains("secret"));

    // Events raise its counters.
    let count = |t: &str| t.trim().parse::<u64>().unwrap_or(0);
    let before = count(&browser.text(&format!("{row} td.invocations")).await?);
    for value in [11.0, 12.0, 13.0, 14.0, 15.0] {
        assert_eq!(h.invoke(&acme, "filter", value).await?.0, 200);
    }
    browser
        .wait_text(&format!("{row} td.invocations"), |t| count(t) >= before + 5)
        .await?;

    // Following its log: a line logged now arrives on the page.
    browser.click(row).await?;
    browser
        .wait_text("#log-function", |t| t == "filter")
        .await?;
    assert_eq!(h.invoke(&acme, "filter", 77.5).await?.0, 200);
    browser.wait_text("#logs", |t| t.contains("77.5")).await?;
    browser
        .wait_text("#outbox", |t| t.contains("cloud") && t.contains("NO"))
        .await?;
    browser
        .wait_text("#models", |t| t.contains("FALLBACK"))
        .await?;

    let png = browser.screenshot().await?;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("dashboard.png"), &png)?;
    h.node.shutdown().await
}
