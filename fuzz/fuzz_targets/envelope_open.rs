//! Arbitrary bytes into the envelope parser: it must never panic, and whatever it accepts must be
//! exactly what sealing the parsed header and payload produces (one encoding per envelope, so
//! nothing outside header, payload and tag can ride along).
#![no_main]

use gateway::cluster::envelope;
use gateway::cluster::keys::Keyring;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::new(1, [(1, [0x5a; 32]), (2, [0xa5; 32])]).expect("valid test keyring");
    if let Ok(opened) = envelope::open(data, &keys) {
        let key = keys
            .get(opened.header.key_id)
            .expect("opened with a listed key");
        let again = envelope::seal(&opened.header, opened.payload, key);
        assert_eq!(again, data, "accepted envelope is not canonical");
    }
});
