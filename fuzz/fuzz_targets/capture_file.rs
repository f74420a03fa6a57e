//! `capture -r`: pcap and pcapng files, every packet read and printed as the text output does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracer::capture::{format::format_packet_on, read_capture_file, TextOptions};

fuzz_target!(|file: &[u8]| {
    let Ok(mut reader) = read_capture_file(file) else {
        return;
    };
    let _ = reader.file_link_type();
    let opts = TextOptions {
        verbose: true,
        link_headers: true,
    };
    // Bounded: a record can be as small as its header, so a 1 MiB input holds ~30 000.
    for _ in 0..100_000 {
        match reader.next_packet() {
            Some(Ok(p)) => {
                let _ = format_packet_on(p.link, &p.packet, &opts);
            }
            Some(Err(_)) | None => break,
        }
    }
});
