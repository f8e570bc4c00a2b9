//! The payload's error protection: a CRC-24 (OpenPGP's polynomial) that tells a real decode from
//! noise, and a rate-1/2 convolutional code (constraint length 7, generators 133/171 octal, as in
//! 802.11 and DVB) decoded with soft-decision Viterbi.

/// Payload bits carried.
pub const PAYLOAD_BITS: usize = 64;
const CRC_BITS: usize = 24;
/// Bits into the convolutional coder: payload, CRC.
pub const MESSAGE_BITS: usize = PAYLOAD_BITS + CRC_BITS;
const K: usize = 7;
const TAIL: usize = K - 1;
/// Coded bits out: two per message and tail bit.
pub const CODED_BITS: usize = 2 * (MESSAGE_BITS + TAIL);
const G: [u32; 2] = [0o133, 0o171];
const STATES: usize = 1 << (K - 1);

/// CRC-24/OPENPGP over the payload's 64 bits.
fn crc24(payload: u64) -> u32 {
    let mut crc: u32 = 0xB7_04CE;
    for byte in payload.to_be_bytes() {
        crc ^= u32::from(byte) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4CFB;
            }
        }
    }
    crc & 0xFF_FFFF
}

fn message(payload: u64) -> Vec<u8> {
    let crc = crc24(payload);
    let mut bits = Vec::with_capacity(MESSAGE_BITS);
    bits.extend((0..PAYLOAD_BITS).rev().map(|i| ((payload >> i) & 1) as u8));
    bits.extend((0..CRC_BITS).rev().map(|i| ((crc >> i) & 1) as u8));
    bits
}

fn parity(x: u32) -> u8 {
    (x.count_ones() & 1) as u8
}

/// The coded bits for a payload (0/1).
pub fn encode(payload: u64) -> Vec<u8> {
    let mut state: u32 = 0;
    let mut out = Vec::with_capacity(CODED_BITS);
    for b in message(payload).into_iter().chain([0; TAIL]) {
        state = ((state << 1) | u32::from(b)) & ((1 << K) - 1);
        out.push(parity(state & G[0]));
        out.push(parity(state & G[1]));
    }
    out
}

/// Decodes soft values (positive means bit 1, magnitude is confidence) into the payload, or
/// `None` when the CRC does not match.
pub fn decode(soft: &[f32]) -> Option<u64> {
    if soft.len() != CODED_BITS {
        return None;
    }
    let steps = MESSAGE_BITS + TAIL;
    // Path metrics (higher is better) and survivor decisions.
    let mut metric = [f32::NEG_INFINITY; STATES];
    metric[0] = 0.0;
    let mut from: Vec<[u8; STATES]> = Vec::with_capacity(steps);
    for t in 0..steps {
        let (s0, s1) = (soft[2 * t], soft[2 * t + 1]);
        let mut next = [f32::NEG_INFINITY; STATES];
        let mut choice = [0u8; STATES];
        let input_choices: &[u32] = if t >= MESSAGE_BITS { &[0] } else { &[0, 1] };
        for (prev, &m) in metric.iter().enumerate() {
            if m == f32::NEG_INFINITY {
                continue;
            }
            for &b in input_choices {
                let reg = (((prev as u32) << 1) | b) & ((1 << K) - 1);
                let (c0, c1) = (parity(reg & G[0]), parity(reg & G[1]));
                let gain = if c0 == 1 { s0 } else { -s0 } + if c1 == 1 { s1 } else { -s1 };
                let ns = (reg & (STATES as u32 - 1)) as usize;
                if m + gain > next[ns] {
                    next[ns] = m + gain;
                    // The bit shifted out of the state tells which predecessor it was.
                    choice[ns] = (prev >> (K - 2)) as u8;
                }
            }
        }
        metric = next;
        from.push(choice);
    }
    // The tail brings the coder back to state 0.
    let mut state = 0usize;
    let mut bits = vec![0u8; steps];
    for t in (0..steps).rev() {
        bits[t] = (state & 1) as u8;
        let high = from[t][state] as usize;
        state = (state >> 1) | (high << (K - 2));
    }
    let payload = bits[..PAYLOAD_BITS]
        .iter()
        .fold(0u64, |acc, &b| (acc << 1) | u64::from(b));
    let crc = bits[PAYLOAD_BITS..MESSAGE_BITS]
        .iter()
        .fold(0u32, |acc, &b| (acc << 1) | u32::from(b));
    (crc == crc24(payload)).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft(bits: &[u8]) -> Vec<f32> {
        bits.iter().map(|&b| if b == 1 { 1.0 } else { -1.0 }).collect()
    }

    #[test]
    fn round_trip_and_crc() {
        for p in [0u64, 1, 0xDEAD_BEEF_0123_4567, u64::MAX] {
            let c = encode(p);
            assert_eq!(c.len(), CODED_BITS);
            assert_eq!(decode(&soft(&c)), Some(p));
        }
        assert_eq!(crc24(0), crc24(0));
        assert_ne!(crc24(1), crc24(2));
    }

    #[test]
    fn corrects_scattered_errors_and_refuses_noise() {
        let p = 0x0123_4567_89AB_CDEF;
        let mut s = soft(&encode(p));
        // Flip every 9th coded bit: ~11 % errors, spread out.
        for i in (0..s.len()).step_by(9) {
            s[i] = -s[i];
        }
        assert_eq!(decode(&s), Some(p));
        // Noise decodes to nothing (the CRC refuses it).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut refused = 0;
        for _ in 0..200 {
            let noise: Vec<f32> = (0..CODED_BITS)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            refused += usize::from(decode(&noise).is_none());
        }
        assert_eq!(refused, 200);
    }
}
