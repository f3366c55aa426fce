//! The `hearth` binary.

fn main() {
    println!("hearth: not yet implemented");
}
