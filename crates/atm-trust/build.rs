//! The schema migrations are embedded at compile time (refinery's `embed_migrations!`), so a
//! new or changed migration file must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
