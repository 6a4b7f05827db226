fn main() {
    println!("shoal-sim: not built yet");
}
