//! `hexdump -C`'s format: offset, 16 bytes in two groups of 8, the printable ASCII.

/// The lines for `data`, which starts at `offset` of the shared memory.
pub fn lines(offset: u64, data: &[u8]) -> Vec<String> {
    data.chunks(16)
        .enumerate()
        .map(|(i, row)| {
            let mut hex = String::new();
            for j in 0..16 {
                if j == 8 {
                    hex.push(' ');
                }
                match row.get(j) {
                    Some(b) => hex += &format!("{b:02x} "),
                    None => hex += "   ",
                }
            }
            let ascii: String = row
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:08x}  {hex} |{ascii}|", offset + 16 * i as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_sixteen_with_ascii_like_hexdump_c() {
        let data: Vec<u8> = (0x41..0x41 + 20).collect();
        assert_eq!(
            lines(0x1000, &data),
            [
                "00001000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|",
                "00001010  51 52 53 54                                       |QRST|",
            ]
        );
    }

    #[test]
    fn unprintable_bytes_are_dots() {
        assert_eq!(
            lines(0, &[0, b' ', 0x7f, 0xff, b'~']),
            ["00000000  00 20 7f ff 7e                                    |. ..~|"]
        );
        assert!(lines(0, &[]).is_empty());
    }
}
