//! Property tests of the filter (proptest, on the strategies of `strategy`): canonical
//! text parses back, compiled bytecode agrees with the reference evaluator, headers with
//! one signature have one key.

use std::cell::Cell;

use pktpath_common::filter::{
    ETH_P_IP, KEY_ADDR_V4, PacketKey, SIGNATURE_WORDS, eval, key_from_l3, signature_covers,
    signature_mask,
};
use proptest::{
    array::uniform,
    collection::vec,
    prelude::*,
    sample::Index,
    test_runner::{RngAlgorithm, TestCaseResult, TestRunner},
};

use super::{
    super::{FilterError, compile, parse, v4_guard},
    key,
    strategy::{expr, l3},
};

/// `cases` cases on proptest's xorshift source: drawing a packet takes a quarter of the time
/// it takes on ChaCha in a debug build, where drawing the inputs costs more than checking
/// them.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn canonical_text_parses_back_to_the_same_tree(e in expr(5)) {
        prop_assert_eq!(parse(&e.to_string()), Ok(Some(e.clone())), "{}", e);
    }
}

/// Runs `test` on `cases` inputs drawn from `strategy` (proptest, failures persisted beside
/// the others); on a failure, panics with the shrunk input. For properties that also count
/// what they saw, which the `proptest!` macro has no place for.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> TestCaseResult) {
    let config = ProptestConfig {
        source_file: Some(file!()),
        ..config(cases)
    };
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}

/// The important one: for random filters and random packets, the compiled bytecode run by
/// the shared evaluator agrees with the reference evaluator on the syntax tree.
///
/// 3000 filters, 30 a case on average, each case against its own 400 packets on average:
/// drawing a packet costs more than checking it, so a case checks many of each.
#[test]
fn bytecode_agrees_with_reference_evaluator() {
    let (matched, total) = (Cell::new(0usize), Cell::new(0usize));
    let inputs = (vec(expr(6), 1..60), vec(l3(), 1..800));
    check(100, inputs, |(filters, packets)| {
        let keys: Vec<PacketKey> = packets.iter().map(|(et, l3)| key(*et, l3)).collect();
        for e in &filters {
            let prog = match compile(Some(e)) {
                Ok(p) => p,
                Err(FilterError::TooLarge { .. }) => continue,
                Err(other) => return Err(TestCaseError::fail(format!("{e}: {other}"))),
            };
            for k in &keys {
                let want = e.matches(k);
                prop_assert_eq!(eval(&prog, k), want, "filter `{}` on {:?}", e, k);
                matched.set(matched.get() + usize::from(want));
                total.set(total.get() + 1);
            }
        }
        Ok(())
    });
    // The pools are small enough that both verdicts are common.
    let (matched, total) = (matched.get(), total.get());
    assert!(
        matched * 10 > total && matched * 10 < total * 9,
        "{matched} of {total} matched"
    );
}

/// The tracer's guard (`v4_guard`) rejects an IPv4 packet whose protocol and addresses,
/// as a hook reads them from the header (bytes 8-19), and ports (the word at 4 times the
/// IHL) pass none of its tests: for random filters and packets, such a packet is one the
/// compiled program, run by the kernel's evaluator, does not match. Where the parser found
/// no addresses the hook reads whatever lies there, so with a guard on no such packet may
/// match at all; where it found no ports, the word read there is whatever the header holds
/// (or 0 past its end).
#[test]
fn an_ipv4_packet_the_guard_rejects_never_matches() {
    let (rejected, total) = (Cell::new(0usize), Cell::new(0usize));
    let inputs = (vec(expr(6), 1..60), vec(l3(), 1..800));
    check(100, inputs, |(filters, packets)| {
        let v4: Vec<(PacketKey, &Vec<u8>)> = packets
            .iter()
            .filter(|(et, _)| *et == ETH_P_IP)
            .map(|(et, l3)| (key(*et, l3), l3))
            .collect();
        let word = |h: &[u8], at: usize| {
            h.get(at..at + 4)
                .map_or(0, |b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        };
        for e in &filters {
            let prog = match compile(Some(e)) {
                Ok(p) => p,
                Err(FilterError::TooLarge { .. }) => continue,
                Err(other) => return Err(TestCaseError::fail(format!("{e}: {other}"))),
            };
            let g = v4_guard(&prog);
            for (k, h) in &v4 {
                let addresses = k.flags & KEY_ADDR_V4 != 0;
                // The ports where the IHL says (whatever lies there, as the hook reads it).
                let ihl = usize::from(h.first().map_or(0, |b| b & 0x0f)) * 4;
                let passes = g.on == 0
                    || addresses && g.holds(word(h, 8), word(h, 12), word(h, 16), word(h, ihl));
                if !passes {
                    prop_assert!(!eval(&prog, k), "`{}` ({:?}) rejected {:?}", e, g, k);
                    rejected.set(rejected.get() + 1);
                }
                total.set(total.get() + 1);
            }
        }
        Ok(())
    });
    // Not vacuous: the guard rejects a fair share of the packets.
    let (rejected, total) = (rejected.get(), total.get());
    assert!(rejected * 10 > total, "{rejected} of {total} rejected");
}

/// The masked words of `h` under `mask`.
fn signature(h: &[u8; 96], mask: &[u64; SIGNATURE_WORDS]) -> [u64; SIGNATURE_WORDS] {
    std::array::from_fn(|i| {
        u64::from_ne_bytes(h[i * 8..i * 8 + 8].try_into().expect("8 bytes")) & mask[i]
    })
}

/// The tracer reuses a verdict for a header whose signature it has seen: for random headers
/// (with options, extension headers, fragments, truncation, other EtherTypes) and copies
/// with every byte outside the signature changed and captured to another length with the
/// same mask, the key is the same whenever the signature covers the header. And the masks
/// are not vacuous: changing a byte inside them changes keys.
#[test]
fn headers_with_one_signature_have_one_key() {
    let (checked, covered, differed) = (Cell::new(0usize), Cell::new(0usize), Cell::new(0usize));
    let count = |c: &Cell<usize>| c.set(c.get() + 1);
    // A header; the bytes to put outside its signature; which of the capture lengths with
    // its mask to give the copy; a byte to change inside the signature.
    let inputs = (
        l3(),
        uniform::<_, { 96 / 8 }>(any::<u64>()),
        any::<Index>(),
        0..SIGNATURE_WORDS * 8,
    );
    check(20_000, inputs, |((et, l3), noise, capture, at)| {
        let noise: Vec<u8> = noise.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut a = [0u8; 96];
        let n = l3.len().min(96);
        a[..n].copy_from_slice(&l3[..n]);
        let Some(mask) = signature_mask(et, n) else {
            return Ok(());
        };
        count(&checked);
        let bits: Vec<u8> = mask.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut b = a;
        for (i, byte) in b.iter_mut().enumerate() {
            let keep = bits.get(i).copied().unwrap_or(0);
            *byte = (*byte & keep) | (noise[i] & !keep);
        }
        // b captured to another length with the same mask.
        let lengths: Vec<usize> = (0..=96)
            .filter(|&m| signature_mask(et, m).is_some_and(|other| std::ptr::eq(other, mask)))
            .collect();
        let m = *capture.get(&lengths);
        prop_assert_eq!(signature(&a, mask), signature(&b, mask));
        if !signature_covers(mask, &a, et) {
            return Ok(());
        }
        count(&covered);
        prop_assert_eq!(
            key_from_l3(&a, n, et),
            key_from_l3(&b, m, et),
            "ethertype {:#06x}, header {:02x?}, captured {} and {}",
            et,
            &a[..n],
            n,
            m
        );
        // A byte inside the signature changed: the signature changes with it.
        if bits[at] != 0 {
            let mut c = a;
            c[at] ^= bits[at] & bits[at].wrapping_neg();
            prop_assert_ne!(signature(&a, mask), signature(&c, mask));
            if key_from_l3(&c, n, et) != key_from_l3(&a, n, et) {
                count(&differed);
            }
        }
        Ok(())
    });
    let (checked, covered, differed) = (checked.get(), covered.get(), differed.get());
    assert!(
        checked > 15_000 && covered * 2 > checked,
        "{covered} of {checked}"
    );
    assert!(differed > 1_000, "{differed}");
}
