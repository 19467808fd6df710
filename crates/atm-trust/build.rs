//! The schema migrations are embedded at compile time (refinery's `embed_migrations!`), so a
//! new or changed migration file must rebuild the crate. `migrations` here links to the
//! workspace's `migrations/` folder (the package holds the files themselves).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
