//! An owner's attributes in one allocation: what the table keeps per owner, instead of
//! a map with a heap text for every key and every value (50,000 owners of five
//! attributes took about 1 KB each that way).

use super::Attrs;
use std::fmt;

/// Keys and values in key order, each as its byte length (4 bytes, little-endian) and
/// its UTF-8 bytes. Equal attributes pack to equal bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PackedAttrs(Box<[u8]>);

impl PackedAttrs {
    /// Packs `attrs`.
    pub fn pack(attrs: &Attrs) -> Self {
        let len = attrs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut bytes = Vec::with_capacity(len);
        for text in attrs.iter().flat_map(|(k, v)| [k, v]) {
            bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
        PackedAttrs(bytes.into_boxed_slice())
    }

    /// Each key and its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest: &[u8] = &self.0;
        let mut text = move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (text, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
            rest = tail;
            // SAFETY: `pack` wrote whole texts, each after its length: these bytes are
            // one of them.
            Some(unsafe { std::str::from_utf8_unchecked(text) })
        };
        std::iter::from_fn(move || Some((text()?, text()?)))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    /// The attributes as a map.
    pub fn to_attrs(&self) -> Attrs {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl fmt::Debug for PackedAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_pack_and_read_back() {
        let attrs = Attrs::from(
            [("app", "api"), ("zone", ""), ("a\u{0}b", "é\"\n")]
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let packed = PackedAttrs::pack(&attrs);
        assert_eq!(packed.to_attrs(), attrs);
        assert_eq!(packed.get("app"), Some("api"));
        assert_eq!(packed.get("zone"), Some(""));
        assert_eq!(packed.get("ap"), None);
        assert_eq!(
            packed.keys().collect::<Vec<_>>(),
            ["a\u{0}b", "app", "zone"]
        );
        assert_eq!(PackedAttrs::pack(&Attrs::new()).iter().count(), 0);
        let mut other = attrs.clone();
        other.insert("app".into(), "web".into());
        assert_ne!(PackedAttrs::pack(&other), packed);
        assert_eq!(PackedAttrs::pack(&attrs.clone()), packed);
    }
}
