//! Random text sources for the generator.
//!
//! A source is chosen by name (`lipsum`, `fake`, `uuid`) and may be seeded, so
//! that tests can ask for the same texts twice.

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

/// Something that can produce the text of the next message.
pub trait TextSource: Send {
    /// The name under which the source is chosen (`--generator NAME`).
    fn name(&self) -> &'static str;
    /// The text of the next message.
    fn next_text(&mut self) -> String;
}

/// The names accepted by [`by_name`], in the order help text lists them.
pub const NAMES: [&str; 3] = ["lipsum", "fake", "uuid"];

/// A name that is not one of [`NAMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSource(pub String);

impl std::fmt::Display for UnknownSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown text source {:?}; valid: {}",
            self.0,
            NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownSource {}

/// A text source, chosen by name; once chosen, it is always built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Lipsum,
    Fake,
    Uuid,
}

impl Source {
    /// The source called `name` (one of [`NAMES`]).
    pub fn from_name(name: &str) -> Result<Self, UnknownSource> {
        match name {
            "lipsum" => Ok(Source::Lipsum),
            "fake" => Ok(Source::Fake),
            "uuid" => Ok(Source::Uuid),
            other => Err(UnknownSource(other.to_string())),
        }
    }

    /// A new source of this kind, seeded with `seed` or from the operating system.
    pub fn build(self, seed: Option<u64>) -> Box<dyn TextSource> {
        let seed = seed.unwrap_or_else(rand::random);
        match self {
            Source::Lipsum => Box::new(Lipsum::new(seed)),
            Source::Fake => Box::new(FakeData::new(seed)),
            Source::Uuid => Box::new(Uuid::new(seed)),
        }
    }
}

/// The source called `name`, seeded with `seed` or from the operating system.
pub fn by_name(name: &str, seed: Option<u64>) -> Result<Box<dyn TextSource>, UnknownSource> {
    Ok(Source::from_name(name)?.build(seed))
}

/// Lorem ipsum of 5 to 15 words: a capitalised sentence ending in a full stop.
pub struct Lipsum {
    rng: SmallRng,
}

/// The words of the classic lorem ipsum passage, without repeats.
const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "eu",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
];

impl Lipsum {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl TextSource for Lipsum {
    fn name(&self) -> &'static str {
        "lipsum"
    }

    fn next_text(&mut self) -> String {
        let words = self.rng.random_range(5..=15);
        let mut text = String::with_capacity(words * 8);
        for i in 0..words {
            let word = LOREM[self.rng.random_range(0..LOREM.len())];
            if i == 0 {
                let mut letters = word.chars();
                text.extend(letters.next().map(|c| c.to_ascii_uppercase()));
                text.push_str(letters.as_str());
            } else {
                text.push(' ');
                text.push_str(word);
            }
        }
        text.push('.');
        text
    }
}

/// Fake data: a sentence, or a person with an address and an email.
pub struct FakeData {
    rng: SmallRng,
}

impl FakeData {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl TextSource for FakeData {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn next_text(&mut self) -> String {
        use fake::faker::address::en::{CityName, StreetName};
        use fake::faker::internet::en::FreeEmail;
        use fake::faker::lorem::en::Sentence;
        use fake::faker::name::en::Name;
        use fake::Fake;
        let rng = &mut self.rng;
        if rng.random_bool(0.5) {
            Sentence(4..12).fake_with_rng(rng)
        } else {
            let name: String = Name().fake_with_rng(rng);
            let number: u16 = rng.random_range(1..2000);
            let street: String = StreetName().fake_with_rng(rng);
            let city: String = CityName().fake_with_rng(rng);
            let email: String = FreeEmail().fake_with_rng(rng);
            format!("{name}, {number} {street}, {city} <{email}>")
        }
    }
}

/// Version 4 UUIDs.
pub struct Uuid {
    rng: SmallRng,
}

impl Uuid {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl TextSource for Uuid {
    fn name(&self) -> &'static str {
        "uuid"
    }

    fn next_text(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_a_source_of_that_name() {
        for name in NAMES {
            let mut source = by_name(name, Some(1)).unwrap();
            assert_eq!(source.name(), name);
            assert!(!source.next_text().is_empty());
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_texts() {
        for name in NAMES {
            let mut a = by_name(name, Some(42)).unwrap();
            let mut b = by_name(name, Some(42)).unwrap();
            let ta: Vec<String> = (0..5).map(|_| a.next_text()).collect();
            let tb: Vec<String> = (0..5).map(|_| b.next_text()).collect();
            assert_eq!(ta, tb, "{name}");
        }
    }

    #[test]
    fn different_seeds_give_different_texts() {
        for name in NAMES {
            let mut a = by_name(name, Some(1)).unwrap();
            let mut b = by_name(name, Some(2)).unwrap();
            assert_ne!(a.next_text(), b.next_text(), "{name}");
        }
    }

    #[test]
    fn lipsum_texts_are_sentences_of_5_to_15_words() {
        let mut source = Lipsum::new(3);
        for _ in 0..200 {
            let text = source.next_text();
            let words = text.split(' ').count();
            assert!((5..=15).contains(&words), "{text}");
            assert!(text.starts_with(|c: char| c.is_ascii_uppercase()), "{text}");
            assert!(text.ends_with('.'), "{text}");
        }
    }

    #[test]
    fn uuid_texts_are_version_4() {
        let mut source = Uuid::new(7);
        let parsed = uuid::Uuid::parse_str(&source.next_text()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let err = by_name("nope", None).err().unwrap().to_string();
        assert!(err.contains("lipsum, fake, uuid"), "{err}");
    }
}
