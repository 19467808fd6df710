//! Helpers for the vault tests: the bot with a vault, devices that run `sync-client sync` (and
//! the other vault commands) on a bookmark file of their own, in one of the browser formats.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use sync_client::bookmarks::{self, Bookmark, BookmarkTree, Folder, FolderRole, Format, Node};
use sync_client::sync::{TEST_PAUSE_AT, TEST_RESUME};
use test_prosody::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::e2e::echo_bot_binary;

/// Every bookmark URL of the tests has this host part, so the log can be searched for it.
pub(crate) const MARKER: &str = "vault-marker-";

pub(crate) fn url(name: &str) -> String {
    format!("https://{MARKER}{name}.example/")
}

/// A Prosody with the accounts `users` (password `<user>-password`).
pub(crate) fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start().unwrap();
    for user in users {
        server
            .create_account(user, &format!("{user}-password"))
            .unwrap();
    }
    server
}

/// `names` and twenty more, so that one deletion stays under the failsafe's 20 %.
pub(crate) fn with_filler<'a>(names: &[&'a str]) -> Vec<&'a str> {
    const FILLER: [&str; 20] = [
        "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12", "f13",
        "f14", "f15", "f16", "f17", "f18", "f19",
    ];
    names.iter().copied().chain(FILLER).collect()
}

/// The sorted URLs of `names`.
pub(crate) fn expected(names: &[&str]) -> Vec<String> {
    let mut urls: Vec<String> = names.iter().map(|n| url(n)).collect();
    urls.sort();
    urls
}

/// The URLs of a bookmark file, sorted (duplicates kept).
pub(crate) fn urls(path: &Path) -> Vec<String> {
    let (_, tree) = bookmarks::import_file(path, None).unwrap();
    let mut urls = Vec::new();
    fn walk(node: &Node, urls: &mut Vec<String>) {
        match node {
            Node::Folder(f) => f.children.iter().for_each(|c| walk(c, urls)),
            Node::Bookmark(b) => urls.push(b.url.clone()),
            Node::Separator(_) => {}
        }
    }
    tree.roots.iter().for_each(|n| walk(n, &mut urls));
    urls.sort();
    urls
}

/// Writes `names` as bookmarks on the toolbar of a file in `format` (the other roots empty).
pub(crate) fn write_bookmarks(path: &Path, format: Format, names: &[&str]) {
    let bookmark = |name: &&str| {
        Node::Bookmark(Bookmark {
            title: format!("Page {name}"),
            url: url(name),
            ..Bookmark::default()
        })
    };
    let root = |role: FolderRole, title: &str, children: Vec<Node>| {
        Node::Folder(Folder {
            title: title.to_owned(),
            role: Some(role),
            children,
            ..Folder::default()
        })
    };
    let tree = BookmarkTree {
        roots: vec![
            root(
                FolderRole::Toolbar,
                "Bookmarks bar",
                names.iter().map(bookmark).collect(),
            ),
            root(FolderRole::Other, "Other bookmarks", Vec::new()),
        ],
        extra: Default::default(),
    };
    std::fs::write(path, bookmarks::export(&tree, format).unwrap()).unwrap();
}

/// The bot's configuration: vault `alice` for alice and carol.
const BOT_CONFIG: &str = "[sync.vault.alice]\nallow = [\"alice@localhost\", \"carol@localhost\"]\n";

/// Starts the echo bot as `bot` with a vault (its database and log in `dir`; a restart keeps
/// the database) and waits until it is ready.
pub(crate) async fn start_vault_bot(server: &TestServer, dir: &Path) -> Child {
    start_vault_bot_with(server, dir, &[]).await
}

/// [`start_vault_bot`] with more flags.
pub(crate) async fn start_vault_bot_with(server: &TestServer, dir: &Path, extra: &[&str]) -> Child {
    let config = dir.join("bot.toml");
    std::fs::write(&config, BOT_CONFIG).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bot.log"))
        .unwrap();
    let mut child = Command::new(echo_bot_binary())
        .arg("--config")
        .arg(&config)
        .args(["--jid", server.jid("bot").unwrap().as_str()])
        .args(["--server", &format!("127.0.0.1:{}", server.port())])
        .arg("--ca-file")
        .arg(server.ca_file())
        .arg("--db")
        .arg(dir.join("bot.sqlite3"))
        .args(extra)
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
pub(crate) struct Device {
    pub(crate) user: &'static str,
    pub(crate) db: PathBuf,
    pub(crate) file: PathBuf,
    pub(crate) format: Format,
    pub(crate) bot_log: PathBuf,
    /// `--timeout` (seconds).
    pub(crate) timeout: u32,
}

impl Device {
    /// A device with a file of `format` where that browser keeps it: Falkon's
    /// `bookmarks.json`, Chromium's `Default/Bookmarks`, a Firefox backup in
    /// `bookmarkbackups/`, or `bookmarks.html`.
    pub(crate) fn new(dir: &Path, user: &'static str, name: &str, format: Format) -> Self {
        let home = dir.join(name);
        let file = match format {
            Format::Falkon => home.join("falkon/bookmarks.json"),
            Format::Chromium => home.join("chromium/Default/Bookmarks"),
            Format::FirefoxJson => home.join("firefox/bookmarkbackups/bookmarks-2026-12-02.json"),
            _ => home.join("bookmarks.html"),
        };
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        Self {
            user,
            db: home.join("omemo.sqlite3"),
            file,
            format,
            bot_log: dir.join("bot.log"),
            timeout: 90,
        }
    }

    /// Writes `names` to the device's file.
    pub(crate) fn write(&self, names: &[&str]) {
        write_bookmarks(&self.file, self.format, names);
    }

    /// The command line of `sync-client COMMAND` for this device, JSON output.
    pub(crate) fn command(&self, server: &TestServer, command: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sync-client"));
        cmd.arg(command)
            .args(["--jid", server.jid(self.user).unwrap().as_str()])
            .args(["--server", &format!("127.0.0.1:{}", server.port())])
            .arg("--ca-file")
            .arg(server.ca_file())
            .arg("--db")
            .arg(&self.db)
            .args(["--to", server.jid("bot").unwrap().as_str()])
            .args(["--vault", "alice", "--json"])
            .args(["--timeout", &self.timeout.to_string()])
            .arg("--file")
            .arg(&self.file)
            .args(extra)
            .env("XMPP_PASSWORD", format!("{}-password", self.user))
            .env("RUST_LOG", "warn,sync_client=info")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Starts `sync-client sync` told to stop at `step` (and, with `resume`, to go on once
    /// that file exists) and waits until it says it stopped there. Its stdout is piped when it
    /// is to go on (its summary is read), dropped otherwise.
    pub(crate) async fn sync_paused_at(
        &self,
        server: &TestServer,
        step: &str,
        resume: Option<&Path>,
    ) -> Child {
        let mut command = self.command(server, "sync", &[]);
        command.env(TEST_PAUSE_AT, step).stderr(Stdio::piped());
        match resume {
            Some(resume) => command.env(TEST_RESUME, resume).stdout(Stdio::piped()),
            None => command.stdout(Stdio::null()),
        };
        let mut child = command.spawn().unwrap();
        wait_for_stderr(
            &mut child,
            &format!("test pause at {step}"),
            Duration::from_secs(120),
        )
        .await;
        child
    }

    pub(crate) async fn run(&self, server: &TestServer, command: &str, extra: &[&str]) -> Output {
        self.command(server, command, extra).output().await.unwrap()
    }

    pub(crate) async fn sync(&self, server: &TestServer, extra: &[&str]) -> Output {
        self.run(server, "sync", extra).await
    }

    /// Runs `command` and checks that it worked; the JSON summary.
    pub(crate) async fn ok(
        &self,
        server: &TestServer,
        command: &str,
        extra: &[&str],
    ) -> serde_json::Value {
        let output = self.run(server, command, extra).await;
        self.check(&output)
    }

    /// Syncs and checks that it worked; the JSON summary.
    pub(crate) async fn sync_ok(&self, server: &TestServer, extra: &[&str]) -> serde_json::Value {
        self.ok(server, "sync", extra).await
    }

    /// The JSON summary of a run that must have worked.
    pub(crate) fn check(&self, output: &Output) -> serde_json::Value {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "run as {} failed ({:?})\nstdout: {stdout}\nstderr: {}\nbot log: {}",
            self.user,
            output.status,
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&self.bot_log).unwrap_or_default()
        );
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
    }
}

/// Reads `child`'s stderr until a line contains `needle` (within `within`); the lines read.
pub(crate) async fn wait_for_stderr(child: &mut Child, needle: &str, within: Duration) -> String {
    let stderr = child.stderr.as_mut().expect("stderr must be piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let found = tokio::time::timeout(within, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "{needle:?} did not show on stderr; it had:\n{seen}"
    );
    seen
}

/// Runs `echo-bot ARGS` on the bot's database in `dir` (the trust commands work next to the
/// running bot); its standard output.
pub(crate) async fn bot_command(server: &TestServer, dir: &Path, args: &[&str]) -> String {
    let output = Command::new(echo_bot_binary())
        .args(["--jid", server.jid("bot").unwrap().as_str()])
        .arg("--db")
        .arg(dir.join("bot.sqlite3"))
        .args(args)
        .env_remove("XMPP_PASSWORD")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "echo-bot {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until `path` (a log) contains `needle`.
pub(crate) async fn wait_for_file_text(path: &Path, needle: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} did not show in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
