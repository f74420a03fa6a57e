//! The agent's gRPC messages as both ends decode them: protobuf (prost) of every request and
//! reply, then the conversions into model values (scopes, places, the JSON payloads).
//!
//! Input: byte 0 picks the message; the rest is its protobuf encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netpath_agent::{proto, wire};
use netpath_core::model::{Endpoint, Event, Probe, ProbeOutcome};
use prost::Message;

fuzz_target!(|input: &[u8]| {
    let [which, bytes @ ..] = input else {
        return;
    };
    match which % 8 {
        // Server side: what a client sends.
        0 => {
            if let Ok(req) = proto::OpenStreamRequest::decode(bytes) {
                if let Ok(scope) = wire::scope_from(req) {
                    // An accepted scope crosses the wire unchanged.
                    assert_eq!(wire::scope_from(wire::scope_to(&scope)).ok(), Some(scope));
                }
            }
        }
        1 => {
            if let Ok(req) = proto::ProbeRequest::decode(bytes) {
                let _ = wire::from_json::<Probe>(&req.probe_json, "probe");
            }
        }
        2 => {
            if let Ok(req) = proto::InspectRequest::decode(bytes) {
                let _ = wire::place_from(req.at);
            }
        }
        3 => {
            let _ = proto::ResolveRequest::decode(bytes);
        }
        // Client side: what an agent answers.
        4 => {
            if let Ok(msg) = proto::StreamMessage::decode(bytes) {
                if let Some(proto::stream_message::Item::Events(batch)) = msg.item {
                    for e in &batch.events_json {
                        let _ = wire::from_json::<Event>(e, "event");
                    }
                }
            }
        }
        5 => {
            if let Ok(reply) = proto::ProbeReply::decode(bytes) {
                let _ = wire::from_json::<ProbeOutcome>(&reply.outcome_json, "outcome");
            }
        }
        6 => {
            if let Ok(reply) = proto::ResolveReply::decode(bytes) {
                let _ = wire::from_json::<Endpoint>(&reply.endpoint_json, "endpoint");
            }
        }
        _ => {
            let _ = proto::InfoReply::decode(bytes);
            let _ = proto::InspectReply::decode(bytes);
        }
    }
});
