fn main() {
    println!("netpath: under construction");
}
