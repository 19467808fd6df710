//! Placeholder binary for the bookmark-sync client; the XMPP front end replaces it.

fn main() {
    println!("sync-client {}", env!("CARGO_PKG_VERSION"));
}
