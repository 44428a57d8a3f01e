use super::*;

const A: u64 = 0xffff_8880_0a00_0100;
const B: u64 = 0xffff_8880_0a00_0200;
const C: u64 = 0xffff_8880_0a00_0300;
const D: u64 = 0xffff_8880_0a00_0400;

#[test]
fn a_decision_without_an_skb_joins_the_packets_journey_across_a_copy() {
    let mut j = Journeys::new();
    // Not following packets: no journey for it.
    j.packet((A, 0), 1_000, (7, 70), None, true, false);
    assert!(j.packet_hop(1_100, (7, 70)).is_none());

    let mut j = Journeys::new();
    j.follow_packets();
    let sent = j.packet((A, 0), 1_000, (7, 70), None, false, true);
    let freed = j.packet((A, 0), 1_200, (7, 70), None, true, false);
    let (xdp, skb) = j
        .packet_hop(1_500, (7, 70))
        .expect("the freed skb's packet");
    assert_eq!(skb, A);
    assert_eq!(
        (xdp.packet_id, xdp.hop, xdp.delta_ns),
        (sent.packet_id, freed.hop + 1, Some(300))
    );
    // The copy, a new skb, continues it; another packet in a new skb does not.
    let copy = j.packet((B, 0), 1_800, (7, 70), None, false, false);
    assert_eq!((copy.packet_id, copy.hop), (sent.packet_id, xdp.hop + 1));
    assert!(j.take_awaited().is_none(), "a journey continued, not begun");
    let other = j.packet((C, 0), 1_900, (8, 80), None, false, false);
    assert_ne!(other.packet_id, sent.packet_id);
    // Another packet's signature with the same identity is not it.
    assert!(j.packet_hop(2_000, (9, 70)).is_none());
    // Seen too long ago: the decision may begin a journey, which the next new skb with
    // the packet takes, as its second hop.
    assert!(j.packet_hop(20_000_000, (7, 70)).is_none());
    let nic = j.packet((D, 0), 20_000_400, (7, 70), None, false, false);
    assert_eq!((nic.hop, nic.delta_ns), (2, Some(400)));
    assert_eq!(nic.first_seen_ns, 20_000_000);
    assert_eq!(j.take_awaited(), Some((7, 70)));
}

#[test]
fn hops_of_one_skb_share_an_id_and_chain_deltas() {
    let mut j = Journeys::new();
    let s1 = j.step(A, 1_000, 7, false);
    let s2 = j.step(A, 1_500, 7, false);
    let s3 = j.step(A, 4_000, 7, false);
    assert_eq!((s1.packet_id, s1.delta_ns, s1.hop), (1, None, 1));
    assert_eq!((s2.packet_id, s2.delta_ns, s2.hop), (1, Some(500), 2));
    assert_eq!((s3.packet_id, s3.delta_ns, s3.hop), (1, Some(2_500), 3));
    assert_eq!(s3.first_seen_ns, 1_000);
}

#[test]
fn interleaved_packets_keep_their_own_journeys() {
    let mut j = Journeys::new();
    assert_eq!(j.step(A, 10, 7, false).packet_id, 1);
    assert_eq!(j.step(B, 20, 7, false).packet_id, 2);
    let a2 = j.step(A, 35, 7, false);
    let b2 = j.step(B, 36, 7, false);
    assert_eq!((a2.packet_id, a2.delta_ns), (1, Some(25)));
    assert_eq!((b2.packet_id, b2.delta_ns), (2, Some(16)));
}

#[test]
fn a_freed_skb_address_starts_a_new_journey() {
    let mut j = Journeys::new();
    j.step(A, 10, 7, false);
    let free = j.step(A, 20, 7, true);
    assert_eq!((free.packet_id, free.delta_ns), (1, Some(10)));
    assert_eq!(j.open(), 0);
    let reused = j.step(A, 30, 7, false);
    assert_eq!(
        (reused.packet_id, reused.delta_ns, reused.hop),
        (2, None, 1)
    );
}

#[test]
fn an_idle_address_starts_a_new_journey() {
    let mut j = Journeys::new();
    j.step(A, 10, 7, false);
    let late = j.step(A, 10 + IDLE_NS, 7, false);
    assert_eq!((late.packet_id, late.delta_ns), (2, None));
}

#[test]
fn a_different_packet_at_the_same_address_starts_a_new_journey() {
    // The skb was freed where no tracepoint fires, then reused for another packet.
    let mut j = Journeys::new();
    j.step(A, 10, 7, false);
    let other = j.step(A, 20, 8, false);
    assert_eq!((other.packet_id, other.delta_ns), (2, None));
    assert_eq!(j.step(A, 25, 8, false).packet_id, 2);
}

#[test]
fn a_sighting_without_headers_stays_on_the_journey() {
    // Headers still in page fragments at the receive hooks, read once IP pulled them.
    let mut j = Journeys::new();
    assert_eq!(j.step(A, 10, UNKNOWN_SIG, false).packet_id, 1);
    assert_eq!(j.step(A, 20, UNKNOWN_SIG, false).packet_id, 1);
    let known = j.step(A, 30, 7, false);
    assert_eq!(
        (known.packet_id, known.delta_ns, known.hop),
        (1, Some(10), 3)
    );
    // The journey now has that signature: another one, or none, is another packet
    // (the address reused after a free no hook saw).
    assert_eq!(j.step(A, 40, 8, false).packet_id, 2);
    assert_eq!(j.step(B, 50, 7, false).packet_id, 3);
    assert_eq!(j.step(B, 60, UNKNOWN_SIG, false).packet_id, 4);
}

fn flow(src: &str, dst: &str) -> Flow {
    Flow {
        src: Some(src.parse().unwrap()),
        dst: Some(dst.parse().unwrap()),
        proto: Some("icmp".into()),
        ports: None,
    }
}

#[test]
fn a_lookup_joins_the_packet_just_received_with_its_flow() {
    let mut j = Journeys::new();
    let req = flow("10.0.1.1", "10.0.2.2");
    j.packet((A, 0), 1_000, (7, 0), Some(&req), false, true);
    // Another flow's packet in between does not matter.
    j.packet(
        (B, 0),
        1_100,
        (9, 0),
        Some(&flow("10.0.9.9", "10.0.2.2")),
        false,
        true,
    );
    let fib = j.lookup(&req, 1_500, false, None);
    assert_eq!((fib.packet_id, fib.hop, fib.delta_ns), (1, 2, Some(500)));
    // The next hop of the skb counts from the lookup.
    let out = j.packet((A, 0), 2_000, (7, 0), Some(&req), false, true);
    assert_eq!((out.packet_id, out.hop, out.delta_ns), (1, 3, Some(500)));
    // Too late: a lookup of the same flow much later is another packet's.
    let late = j.lookup(&req, 2_000 + FLOW_MATCH_NS, false, None);
    assert_ne!(late.packet_id, 1);
}

#[test]
fn a_lookup_before_the_skb_opens_the_journey_the_skb_continues() {
    let mut j = Journeys::new();
    let reply = flow("10.0.2.2", "10.0.1.1");
    // Two lookups (local table: no match; main: found), then the skb is built.
    let local = j.lookup(&reply, 100, true, None);
    let main = j.lookup(&reply, 150, true, None);
    assert_eq!((local.packet_id, local.hop), (1, 1));
    assert_eq!((main.packet_id, main.hop, main.delta_ns), (1, 2, Some(50)));
    let skb = j.packet((A, 0), 400, (7, 0), Some(&reply), false, true);
    assert_eq!((skb.packet_id, skb.hop, skb.delta_ns), (1, 3, Some(250)));
    assert_eq!(
        j.packet((A, 0), 500, (7, 0), Some(&reply), false, true).hop,
        4
    );
    // A packet of another flow does not adopt a detached lookup.
    j.lookup(&flow("10.0.3.3", "10.0.1.1"), 600, true, None);
    let other = j.packet((B, 0), 700, (8, 0), Some(&reply), false, true);
    assert_eq!((other.packet_id, other.hop), (3, 1));
}

#[test]
fn a_lookup_without_a_source_matches_any_source() {
    let mut j = Journeys::new();
    let mut unsourced = flow("0.0.0.0", "10.0.1.1");
    let first = j.lookup(&unsourced, 100, true, None);
    let skb = j.packet(
        (A, 0),
        300,
        (7, 0),
        Some(&flow("10.0.2.2", "10.0.1.1")),
        false,
        true,
    );
    assert_eq!((skb.packet_id, skb.hop), (first.packet_id, 2));
    unsourced.src = None;
    let again = j.lookup(&unsourced, 400, false, None);
    assert_eq!((again.packet_id, again.hop), (first.packet_id, 3));
    // An input route lookup names no protocol.
    let mut input = flow("10.0.2.2", "10.0.1.1");
    input.proto = None;
    let routed = j.lookup(&input, 450, false, None);
    assert_eq!((routed.packet_id, routed.hop), (first.packet_id, 4));
}

#[test]
fn only_a_packet_leaving_continues_a_lookup_made_before_it() {
    let mut j = Journeys::new();
    let out = flow("10.0.1.1", "10.0.2.2");
    let lookup = j.lookup(&out, 100, true, None);
    // First seen received, or freed: not the packet the lookup was for.
    let rx = j.packet((A, 0), 200, (7, 0), Some(&out), false, false);
    let freed = j.packet((B, 0), 250, (7, 0), Some(&out), true, true);
    assert!(rx.packet_id != lookup.packet_id && freed.packet_id != lookup.packet_id);
    let tx = j.packet((C, 0), 300, (7, 0), Some(&out), false, true);
    assert_eq!((tx.packet_id, tx.hop), (lookup.packet_id, 2));
    // An input lookup (no protocol) with no packet before it is on its own.
    let mut input = flow("10.0.2.2", "10.0.1.1");
    input.proto = None;
    let alone = j.lookup(&input, 400, false, None);
    let later = j.packet(
        (D, 0),
        500,
        (9, 0),
        Some(&flow("10.0.2.2", "10.0.1.1")),
        false,
        true,
    );
    assert_ne!(later.packet_id, alone.packet_id);
}

#[test]
fn a_senders_lookup_for_the_next_datagram_starts_a_new_journey() {
    let mut j = Journeys::new();
    let udp = flow("10.0.1.1", "10.0.2.2");
    let first = j.lookup(&udp, 100, true, None);
    let sent = j.packet((A, 0), 200, (7, 0), Some(&udp), false, true);
    assert_eq!(sent.packet_id, first.packet_id);
    // The next datagram of the same flow, a millisecond later: its lookup is not a hop
    // of the first datagram's journey, and its skb continues the new one.
    let next = j.lookup(&udp, 1_000_200, true, None);
    assert_ne!(next.packet_id, first.packet_id);
    assert_eq!(next.hop, 1);
    let second = j.packet((B, 0), 1_000_300, (7, 0), Some(&udp), false, true);
    assert_eq!((second.packet_id, second.hop), (next.packet_id, 2));
}

#[test]
fn a_rewrite_keeps_the_journey_and_names_the_flow_before_it() {
    let mut j = Journeys::new();
    let before = flow("10.0.1.2", "10.0.1.100");
    let after = flow("10.0.2.1", "10.0.2.2");
    j.packet((A, 0), 10, (7, 99), Some(&before), false, false);
    assert_eq!(j.take_rewrite(), None);
    // DNAT and masquerade: a new signature, the same identity.
    let nat = j.packet((A, 0), 20, (8, 99), Some(&after), false, true);
    assert_eq!((nat.packet_id, nat.hop, nat.delta_ns), (1, 2, Some(10)));
    assert_eq!(j.take_rewrite(), Some(Some(before)));
    assert_eq!(j.take_rewrite(), None, "taken");
    assert_eq!(
        j.packet((A, 0), 30, (8, 99), Some(&after), false, true).hop,
        3
    );
    assert_eq!(j.take_rewrite(), None, "no rewrite since");
    // Another packet in the reused skb (another identity), or an unknown one.
    assert_eq!(
        j.packet((A, 0), 40, (9, 100), None, false, true).packet_id,
        2
    );
    assert_eq!(
        j.packet((A, 0), 50, (10, 0), None, false, true).packet_id,
        3
    );
    assert_eq!(j.take_rewrite(), None);
}

#[test]
fn an_input_lookup_after_dnat_joins_the_packet_its_cpu_received() {
    let mut j = Journeys::new();
    let received = flow("10.0.1.2", "10.0.1.100");
    j.packet((A, 0), 1_000, (7, 99), Some(&received), false, false);
    // The lookup sees the translated destination, which no packet carried yet.
    let mut translated = flow("10.0.1.2", "10.0.2.2");
    translated.proto = None;
    let fib = j.lookup(&translated, 1_200, false, Some(A));
    assert_eq!((fib.packet_id, fib.hop), (1, 2));
    // Not an output lookup, and not once the packet is long gone.
    assert_ne!(j.lookup(&translated, 1_300, true, Some(A)).packet_id, 1);
    let late = j.lookup(&translated, 1_200 + FLOW_MATCH_NS, false, Some(A));
    assert_ne!(late.packet_id, 1);
}

#[test]
fn out_of_order_events_get_a_zero_delta() {
    let mut j = Journeys::new();
    j.step(A, 100, 7, false);
    let early = j.step(A, 90, 7, false);
    assert_eq!(early.delta_ns, Some(0));
    // The journey's clock does not go backwards.
    assert_eq!(j.step(A, 130, 7, false).delta_ns, Some(30));
}

/// A data buffer (`skb->head`).
const BUF: u64 = 0xffff_8880_5000_0000;

#[test]
fn a_clone_is_a_hop_of_its_packets_journey_and_its_free_does_not_end_it() {
    let mut j = Journeys::new();
    let queued = j.packet((A, BUF), 100, (7, 70), None, false, true);
    // A capture's copy, freed once read: same buffer, same identity, another skb.
    let copy = j.packet((B, BUF), 150, (7, 70), None, true, false);
    assert_eq!((copy.packet_id, copy.hop, copy.clone), (1, 2, true));
    assert_eq!(copy.delta_ns, Some(50));
    // The original goes on, after the clone's hop, and is not a clone.
    let sent = j.packet((A, BUF), 160, (7, 70), None, false, true);
    assert_eq!((sent.packet_id, sent.hop, sent.clone), (1, 3, false));
    // Timed from the packet's own last hop, not from the clone's.
    assert_eq!(sent.delta_ns, Some(60));
    assert!(!queued.clone);
    // A clone seen more than once stays one.
    j.packet((C, BUF), 170, (7, 70), None, false, false);
    let again = j.packet((C, BUF), 185, (7, 70), None, false, false);
    assert_eq!((again.packet_id, again.hop, again.clone), (1, 5, true));
    // A clone's own hops are timed from its previous one.
    assert_eq!(again.delta_ns, Some(15));
    // Another packet in another buffer, or in this buffer with another identity, is not
    // a clone.
    assert_eq!(
        j.packet((D, BUF + 0x1000), 190, (7, 70), None, false, true)
            .packet_id,
        2
    );
    let other = j.packet((D + 0x100, BUF), 200, (8, 80), None, false, true);
    assert_eq!((other.packet_id, other.clone), (3, false));
}

#[test]
fn a_clone_read_after_its_original_was_freed_joins_only_by_its_free_soon_after() {
    let mut j = Journeys::new();
    j.packet((A, BUF), 100, (7, 70), None, false, false);
    let freed = j.packet((A, BUF), 200, (7, 70), None, true, false);
    // A raw socket's copy, read (and freed) after the original's free.
    let read = j.packet((B, BUF), 300, (7, 70), None, true, false);
    assert_eq!(
        (read.packet_id, read.hop, read.clone),
        (1, freed.hop + 1, true)
    );
    // Seen on its way first: a new packet in the reused buffer, even with the same
    // identity.
    let reused = j.packet((C, BUF), 400, (7, 70), None, false, true);
    assert_eq!((reused.packet_id, reused.clone), (2, false));
    // And once freed long enough ago, not even a free joins.
    j.packet((C, BUF), 500, (7, 70), None, true, false);
    let late = j.packet((D, BUF), 500 + FLOW_MATCH_NS, (7, 70), None, true, false);
    assert_eq!((late.packet_id, late.clone), (3, false));
}
