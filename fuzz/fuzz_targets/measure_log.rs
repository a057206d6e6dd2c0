//! A domain's TCG event log reaches its vTPM, which replays it, so the
//! reader decodes bytes nobody vouches for: any bytes must decode to events
//! or to an error, never a panic, and whatever decodes must replay
//! consistently. The second half builds logs through domB's writer with
//! fuzzer-chosen buffers and payloads, which must always replay to the PCR
//! values the writer tracked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_domb::measure::{
    replay, Component, EventLog, EventLogReader, DOMAIN_LOG_SIZE, SPEC_ID_EVENT_SIZE,
};

fuzz_target!(|input: (bool, Vec<u8>, u16, Vec<(u8, Vec<u8>)>)| {
    let (after_valid_header, tail, buffer_size, measurements) = input;

    // Half the time the fuzzer's bytes follow a valid Spec ID event, so it
    // spends its effort on TCG_PCR_EVENT2 records rather than rediscovering
    // the signature.
    let mut log_bytes = Vec::new();
    if after_valid_header {
        let mut header = [0u8; SPEC_ID_EVENT_SIZE];
        let log = EventLog::new(&mut header).expect("the header fits exactly");
        log_bytes.extend_from_slice(log.as_bytes());
    }
    log_bytes.extend_from_slice(&tail);

    let replayed = replay(&log_bytes);
    match EventLogReader::new(&log_bytes) {
        Ok(reader) => {
            let mut decoded_all = true;
            for event in reader {
                match event {
                    Ok(event) => {
                        assert!(event.offset < log_bytes.len());
                        assert!(event.data.len() < log_bytes.len());
                    }
                    Err(error) => {
                        assert!(error.offset < log_bytes.len());
                        decoded_all = false;
                    }
                }
            }
            // Replay fails only on a decoding error or a PCR it cannot
            // extend; it never succeeds over bytes the reader refuses.
            if !decoded_all {
                assert!(replayed.is_err());
            }
        }
        Err(_) => assert!(replayed.is_err()),
    }

    let mut buf = vec![0u8; usize::from(buffer_size) % (2 * DOMAIN_LOG_SIZE)];
    let Ok(mut log) = EventLog::new(&mut buf) else {
        return;
    };
    for (which, payload) in &measurements {
        let component = Component::ALL[usize::from(*which) % Component::ALL.len()];
        let _ = log.measure(component, payload);
    }
    assert_eq!(&replay(log.as_bytes()).expect("domB's own log replays"), log.pcrs());
});
