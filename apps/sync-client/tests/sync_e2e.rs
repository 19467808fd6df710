//! `sync-client sync` end to end: a real Prosody, the real echo bot with a vault, two devices
//! of one account and a second allowed account syncing in turns; a disallowed account is
//! refused; the server's stanza log holds no bookmark URL.

// Test helpers outside #[test] functions fail loudly on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use xmpp_core::client::Client;
use xmpp_core::jid::Jid;
use xmpp_core::settings::{AccountSettings, Password, ServerAddress, TrustPolicySetting};

mod common;

use common::e2e::echo_bot_binary;

/// Every bookmark URL of the test has this host part, so the log can be searched for it.
const MARKER: &str = "vault-marker-";

fn url(name: &str) -> String {
    format!("https://{MARKER}{name}.example/")
}

fn write_html(path: &Path, names: &[&str]) {
    let mut html = String::from("<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n");
    for name in names {
        html.push_str(&format!("<DT><A HREF=\"{}\">Page {name}</A>\n", url(name)));
    }
    html.push_str("</DL><p>\n");
    std::fs::write(path, html).unwrap();
}

/// The URLs of a bookmark file, sorted (duplicates kept).
fn urls(path: &Path) -> Vec<String> {
    let (_, tree) = sync_client::bookmarks::import_file(path, None).unwrap();
    let mut urls = Vec::new();
    fn walk(node: &sync_client::bookmarks::Node, urls: &mut Vec<String>) {
        match node {
            sync_client::bookmarks::Node::Folder(f) => {
                f.children.iter().for_each(|c| walk(c, urls))
            }
            sync_client::bookmarks::Node::Bookmark(b) => urls.push(b.url.clone()),
            sync_client::bookmarks::Node::Separator(_) => {}
        }
    }
    tree.roots.iter().for_each(|n| walk(n, &mut urls));
    urls.sort();
    urls
}

/// `names` and twenty more, so that one deletion stays under the failsafe's 20 %.
fn with_filler<'a>(names: &[&'a str]) -> Vec<&'a str> {
    const FILLER: [&str; 20] = [
        "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13",
        "f14", "f15", "f16", "f17", "f18", "f19",
    ];
    names.iter().copied().chain(FILLER).collect()
}

fn expected(names: &[&str]) -> Vec<String> {
    let mut urls: Vec<String> = names.iter().map(|n| url(n)).collect();
    urls.sort();
    urls
}

async fn start_vault_bot(server: &TestServer, dir: &Path) -> Child {
    let config = dir.join("bot.toml");
    std::fs::write(
        &config,
        "[sync.vault.alice]\nallow = [\"alice@localhost\", \"carol@localhost\"]\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("bot.log")).unwrap();
    let mut child = Command::new(echo_bot_binary())
        .arg("--config")
        .arg(&config)
        .args(["--jid", server.jid("bot").unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .arg("--db")
        .arg(dir.join("bot.sqlite3"))
        .env("XMPP_PASSWORD", "bot-password")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("echo-bot ready") {
                return;
            }
        }
        panic!("echo-bot exited before it was ready");
    })
    .await
    .expect("echo-bot did not get ready in time");
    child
}

/// One client: an account, its own OMEMO database (so its own device) and its own file.
struct Device {
    user: &'static str,
    db: PathBuf,
    file: PathBuf,
    bot_log: PathBuf,
}

impl Device {
    fn new(dir: &Path, user: &'static str, name: &str) -> Self {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        Self {
            user,
            db: home.join("omemo.sqlite3"),
            file: home.join("bookmarks.html"),
            bot_log: dir.join("bot.log"),
        }
    }

    async fn sync(&self, server: &TestServer, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sync-client"))
            .arg("sync")
            .args(["--jid", server.jid(self.user).unwrap().as_str()])
            .args(["--server", &format!("127.0.0.1:{}", server.port())])
            .arg("--ca-file")
            .arg(server.ca_file())
            .arg("--db")
            .arg(&self.db)
            .args(["--to", server.jid("bot").unwrap().as_str()])
            .args(["--vault", "alice", "--timeout", "90", "--json"])
            .arg("--file")
            .arg(&self.file)
            .args(extra)
            .env("XMPP_PASSWORD", format!("{}-password", self.user))
            .env("RUST_LOG", "warn,sync_client=info")
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap()
    }

    /// Syncs and checks that it worked; the JSON summary.
    async fn sync_ok(&self, server: &TestServer, extra: &[&str]) -> serde_json::Value {
        let output = self.sync(server, extra).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "sync as {} failed\nstdout: {stdout}\nstderr: {}\nbot log: {}",
            self.user,
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&self.bot_log).unwrap_or_default()
        );
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_sync_in_turns_and_end_with_the_same_tree() {
    let server = TestServer::start().unwrap();
    for user in ["bot", "alice", "carol", "eve"] {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let _bot = start_vault_bot(&server, dir.path()).await;

    let alice1 = Device::new(dir.path(), "alice", "alice-laptop");
    let alice2 = Device::new(dir.path(), "alice", "alice-desktop");
    let carol = Device::new(dir.path(), "carol", "carol-work");
    write_html(&alice1.file, &with_filler(&["a", "b"]));
    write_html(&alice2.file, &["c"]);
    write_html(&carol.file, &["d"]);

    let first = alice1.sync_ok(&server, &[]).await;
    assert_eq!(first["revision"], 1, "{first}");
    assert_eq!(first["wrote_file"], false);

    // A dry run shows what would come in and changes nothing.
    let before = std::fs::read(&alice2.file).unwrap();
    let dry = alice2.sync_ok(&server, &["--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert!(dry["local_changes"].as_u64().unwrap() >= 2, "{dry}");
    assert_eq!(std::fs::read(&alice2.file).unwrap(), before);

    let second = alice2.sync_ok(&server, &[]).await;
    assert_eq!(second["revision"], 2, "{second}");
    assert_eq!(second["wrote_file"], true);
    assert_eq!(urls(&alice2.file), expected(&with_filler(&["a", "b", "c"])));

    // The browser runs: nothing is written, with a clear message.
    std::fs::write(carol.file.parent().unwrap().join(".parentlock"), "").unwrap();
    let locked = carol.sync(&server, &[]).await;
    assert!(!locked.status.success());
    assert!(
        String::from_utf8_lossy(&locked.stderr).contains("browser seems to be running"),
        "{}",
        String::from_utf8_lossy(&locked.stderr)
    );
    assert_eq!(urls(&carol.file), expected(&["d"]));
    std::fs::remove_file(carol.file.parent().unwrap().join(".parentlock")).unwrap();

    let third = carol.sync_ok(&server, &[]).await;
    assert_eq!(third["revision"], 3, "{third}");
    assert_eq!(
        urls(&carol.file),
        expected(&with_filler(&["a", "b", "c", "d"]))
    );

    // Alice's laptop is two revisions behind and edits meanwhile: deletes b, adds e.
    write_html(&alice1.file, &with_filler(&["a", "e"]));
    let fourth = alice1.sync_ok(&server, &[]).await;
    assert_eq!(fourth["revision"], 4, "{fourth}");
    assert_eq!(
        urls(&alice1.file),
        expected(&with_filler(&["a", "c", "d", "e"]))
    );

    for device in [&alice2, &carol, &alice1] {
        device.sync_ok(&server, &[]).await;
    }
    let all = expected(&with_filler(&["a", "c", "d", "e"]));
    for device in [&alice1, &alice2, &carol] {
        assert_eq!(urls(&device.file), all, "{}", device.file.display());
    }

    // Carol deletes nearly everything: more than the failsafe's 20 %, refused without
    // --force, and nothing changes anywhere.
    write_html(&carol.file, &["a"]);
    let refused = carol.sync(&server, &[]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the merge would delete"), "{stderr}");
    assert_eq!(urls(&carol.file), expected(&["a"]));
    write_html(&carol.file, &with_filler(&["a", "c", "d", "e"]));

    // A disallowed account gets an encrypted refusal and nothing else.
    let eve = Device::new(dir.path(), "eve", "eve");
    write_html(&eve.file, &["evil"]);
    let refused = eve.sync(&server, &[]).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    assert_eq!(urls(&eve.file), expected(&["evil"]));
    // The vault did not take anything of eve's.
    alice1.sync_ok(&server, &[]).await;
    assert_eq!(urls(&alice1.file), all);

    // The server saw no bookmark URL: the vault traffic is inside OMEMO.
    let log = server.stanza_log();
    assert!(
        log.contains("urn:xmpp:omemo:2"),
        "the sync went as OMEMO messages"
    );
    assert!(
        !log.contains(MARKER),
        "a bookmark URL reached the server in plaintext"
    );
    // The positive control: a marker URL in a plaintext message does show in the log.
    let control = url("control");
    plaintext(&server, dir.path(), &control).await;
    assert!(server.stanza_log().contains(&control));
}

async fn plaintext(server: &TestServer, dir: &Path, body: &str) {
    let settings = AccountSettings {
        jid: server.jid("eve").unwrap(),
        password: Password::new("eve-password".to_owned()),
        server: Some(ServerAddress {
            host: "127.0.0.1".to_owned(),
            port: server.port(),
        }),
        ca_file: Some(server.ca_file().to_owned()),
        insecure_plaintext: false,
        db: dir.join("eve-control.sqlite3"),
        label: "positive control".to_owned(),
        trust_policy: TrustPolicySetting::Toakafa,
    };
    let (client, _events) = Client::start(&settings).await.unwrap();
    client
        .send_plaintext(Jid::from(server.jid("bot").unwrap()), body)
        .await
        .unwrap();
    server
        .wait_for_stanza_log(body, Duration::from_secs(20))
        .await
        .unwrap();
    client.close().await;
}
