//! Latin letters that no decomposition takes to their base letter:
//! small capitals and letters with a stroke, bar, hook, tail, curl and the like, each mapped to
//! the ASCII letter its Unicode name is built on. Generated from the character names (see the
//! test `every_latin_letter_variant_by_name_is_mapped`, which lists any that are missing).

/// Sorted by code point, for a binary search.
pub const LETTER_VARIANTS: &[(char, char)] = &[
    ('\u{00D8}', 'o'),  // latin capital letter o with stroke
    ('\u{00F8}', 'o'),  // latin small letter o with stroke
    ('\u{0110}', 'd'),  // latin capital letter d with stroke
    ('\u{0111}', 'd'),  // latin small letter d with stroke
    ('\u{0126}', 'h'),  // latin capital letter h with stroke
    ('\u{0127}', 'h'),  // latin small letter h with stroke
    ('\u{013F}', 'l'),  // latin capital letter l with middle dot (NFKD: `L·`, a word break)
    ('\u{0140}', 'l'),  // latin small letter l with middle dot (NFKD: `l·`, a word break)
    ('\u{0141}', 'l'),  // latin capital letter l with stroke
    ('\u{0142}', 'l'),  // latin small letter l with stroke
    ('\u{0166}', 't'),  // latin capital letter t with stroke
    ('\u{0167}', 't'),  // latin small letter t with stroke
    ('\u{0180}', 'b'),  // latin small letter b with stroke
    ('\u{0181}', 'b'),  // latin capital letter b with hook
    ('\u{0182}', 'b'),  // latin capital letter b with topbar
    ('\u{0183}', 'b'),  // latin small letter b with topbar
    ('\u{0187}', 'c'),  // latin capital letter c with hook
    ('\u{0188}', 'c'),  // latin small letter c with hook
    ('\u{018A}', 'd'),  // latin capital letter d with hook
    ('\u{018B}', 'd'),  // latin capital letter d with topbar
    ('\u{018C}', 'd'),  // latin small letter d with topbar
    ('\u{0191}', 'f'),  // latin capital letter f with hook
    ('\u{0192}', 'f'),  // latin small letter f with hook
    ('\u{0193}', 'g'),  // latin capital letter g with hook
    ('\u{0197}', 'i'),  // latin capital letter i with stroke
    ('\u{0198}', 'k'),  // latin capital letter k with hook
    ('\u{0199}', 'k'),  // latin small letter k with hook
    ('\u{019A}', 'l'),  // latin small letter l with bar
    ('\u{019D}', 'n'),  // latin capital letter n with left hook
    ('\u{019E}', 'n'),  // latin small letter n with long right leg
    ('\u{019F}', 'o'),  // latin capital letter o with middle tilde
    ('\u{01A4}', 'p'),  // latin capital letter p with hook
    ('\u{01A5}', 'p'),  // latin small letter p with hook
    ('\u{01AB}', 't'),  // latin small letter t with palatal hook
    ('\u{01AC}', 't'),  // latin capital letter t with hook
    ('\u{01AD}', 't'),  // latin small letter t with hook
    ('\u{01AE}', 't'),  // latin capital letter t with retroflex hook
    ('\u{01B2}', 'v'),  // latin capital letter v with hook
    ('\u{01B3}', 'y'),  // latin capital letter y with hook
    ('\u{01B4}', 'y'),  // latin small letter y with hook
    ('\u{01B5}', 'z'),  // latin capital letter z with stroke
    ('\u{01B6}', 'z'),  // latin small letter z with stroke
    ('\u{01E4}', 'g'),  // latin capital letter g with stroke
    ('\u{01E5}', 'g'),  // latin small letter g with stroke
    ('\u{0220}', 'n'),  // latin capital letter n with long right leg
    ('\u{0221}', 'd'),  // latin small letter d with curl
    ('\u{0224}', 'z'),  // latin capital letter z with hook
    ('\u{0225}', 'z'),  // latin small letter z with hook
    ('\u{0234}', 'l'),  // latin small letter l with curl
    ('\u{0235}', 'n'),  // latin small letter n with curl
    ('\u{0236}', 't'),  // latin small letter t with curl
    ('\u{023A}', 'a'),  // latin capital letter a with stroke
    ('\u{023B}', 'c'),  // latin capital letter c with stroke
    ('\u{023C}', 'c'),  // latin small letter c with stroke
    ('\u{023D}', 'l'),  // latin capital letter l with bar
    ('\u{023E}', 't'),  // latin capital letter t with diagonal stroke
    ('\u{023F}', 's'),  // latin small letter s with swash tail
    ('\u{0240}', 'z'),  // latin small letter z with swash tail
    ('\u{0243}', 'b'),  // latin capital letter b with stroke
    ('\u{0246}', 'e'),  // latin capital letter e with stroke
    ('\u{0247}', 'e'),  // latin small letter e with stroke
    ('\u{0248}', 'j'),  // latin capital letter j with stroke
    ('\u{0249}', 'j'),  // latin small letter j with stroke
    ('\u{024B}', 'q'),  // latin small letter q with hook tail
    ('\u{024C}', 'r'),  // latin capital letter r with stroke
    ('\u{024D}', 'r'),  // latin small letter r with stroke
    ('\u{024E}', 'y'),  // latin capital letter y with stroke
    ('\u{024F}', 'y'),  // latin small letter y with stroke
    ('\u{0253}', 'b'),  // latin small letter b with hook
    ('\u{0255}', 'c'),  // latin small letter c with curl
    ('\u{0256}', 'd'),  // latin small letter d with tail
    ('\u{0257}', 'd'),  // latin small letter d with hook
    ('\u{0260}', 'g'),  // latin small letter g with hook
    ('\u{0262}', 'g'),  // latin letter small capital g
    ('\u{0266}', 'h'),  // latin small letter h with hook
    ('\u{0268}', 'i'),  // latin small letter i with stroke
    ('\u{026A}', 'i'),  // latin letter small capital i
    ('\u{026B}', 'l'),  // latin small letter l with middle tilde
    ('\u{026C}', 'l'),  // latin small letter l with belt
    ('\u{026D}', 'l'),  // latin small letter l with retroflex hook
    ('\u{0271}', 'm'),  // latin small letter m with hook
    ('\u{0272}', 'n'),  // latin small letter n with left hook
    ('\u{0273}', 'n'),  // latin small letter n with retroflex hook
    ('\u{0274}', 'n'),  // latin letter small capital n
    ('\u{027C}', 'r'),  // latin small letter r with long leg
    ('\u{027D}', 'r'),  // latin small letter r with tail
    ('\u{027E}', 'r'),  // latin small letter r with fishhook
    ('\u{0280}', 'r'),  // latin letter small capital r
    ('\u{0282}', 's'),  // latin small letter s with hook
    ('\u{0288}', 't'),  // latin small letter t with retroflex hook
    ('\u{028B}', 'v'),  // latin small letter v with hook
    ('\u{028F}', 'y'),  // latin letter small capital y
    ('\u{0290}', 'z'),  // latin small letter z with retroflex hook
    ('\u{0291}', 'z'),  // latin small letter z with curl
    ('\u{0299}', 'b'),  // latin letter small capital b
    ('\u{029C}', 'h'),  // latin letter small capital h
    ('\u{029D}', 'j'),  // latin small letter j with crossed-tail
    ('\u{029F}', 'l'),  // latin letter small capital l
    ('\u{02A0}', 'q'),  // latin small letter q with hook
    ('\u{1D00}', 'a'),  // latin letter small capital a
    ('\u{1D04}', 'c'),  // latin letter small capital c
    ('\u{1D05}', 'd'),  // latin letter small capital d
    ('\u{1D07}', 'e'),  // latin letter small capital e
    ('\u{1D0A}', 'j'),  // latin letter small capital j
    ('\u{1D0B}', 'k'),  // latin letter small capital k
    ('\u{1D0D}', 'm'),  // latin letter small capital m
    ('\u{1D0F}', 'o'),  // latin letter small capital o
    ('\u{1D18}', 'p'),  // latin letter small capital p
    ('\u{1D1B}', 't'),  // latin letter small capital t
    ('\u{1D1C}', 'u'),  // latin letter small capital u
    ('\u{1D20}', 'v'),  // latin letter small capital v
    ('\u{1D21}', 'w'),  // latin letter small capital w
    ('\u{1D22}', 'z'),  // latin letter small capital z
    ('\u{1D6C}', 'b'),  // latin small letter b with middle tilde
    ('\u{1D6D}', 'd'),  // latin small letter d with middle tilde
    ('\u{1D6E}', 'f'),  // latin small letter f with middle tilde
    ('\u{1D6F}', 'm'),  // latin small letter m with middle tilde
    ('\u{1D70}', 'n'),  // latin small letter n with middle tilde
    ('\u{1D71}', 'p'),  // latin small letter p with middle tilde
    ('\u{1D72}', 'r'),  // latin small letter r with middle tilde
    ('\u{1D73}', 'r'),  // latin small letter r with fishhook and middle tilde
    ('\u{1D74}', 's'),  // latin small letter s with middle tilde
    ('\u{1D75}', 't'),  // latin small letter t with middle tilde
    ('\u{1D76}', 'z'),  // latin small letter z with middle tilde
    ('\u{1D7D}', 'p'),  // latin small letter p with stroke
    ('\u{1D80}', 'b'),  // latin small letter b with palatal hook
    ('\u{1D81}', 'd'),  // latin small letter d with palatal hook
    ('\u{1D82}', 'f'),  // latin small letter f with palatal hook
    ('\u{1D83}', 'g'),  // latin small letter g with palatal hook
    ('\u{1D84}', 'k'),  // latin small letter k with palatal hook
    ('\u{1D85}', 'l'),  // latin small letter l with palatal hook
    ('\u{1D86}', 'm'),  // latin small letter m with palatal hook
    ('\u{1D87}', 'n'),  // latin small letter n with palatal hook
    ('\u{1D88}', 'p'),  // latin small letter p with palatal hook
    ('\u{1D89}', 'r'),  // latin small letter r with palatal hook
    ('\u{1D8A}', 's'),  // latin small letter s with palatal hook
    ('\u{1D8C}', 'v'),  // latin small letter v with palatal hook
    ('\u{1D8D}', 'x'),  // latin small letter x with palatal hook
    ('\u{1D8E}', 'z'),  // latin small letter z with palatal hook
    ('\u{1D8F}', 'a'),  // latin small letter a with retroflex hook
    ('\u{1D91}', 'd'),  // latin small letter d with hook and tail
    ('\u{1D92}', 'e'),  // latin small letter e with retroflex hook
    ('\u{1D96}', 'i'),  // latin small letter i with retroflex hook
    ('\u{1D99}', 'u'),  // latin small letter u with retroflex hook
    ('\u{1E9A}', 'a'),  // latin small letter a with right half ring
    ('\u{1EFE}', 'y'),  // latin capital letter y with loop
    ('\u{1EFF}', 'y'),  // latin small letter y with loop
    ('\u{2C60}', 'l'),  // latin capital letter l with double bar
    ('\u{2C61}', 'l'),  // latin small letter l with double bar
    ('\u{2C62}', 'l'),  // latin capital letter l with middle tilde
    ('\u{2C63}', 'p'),  // latin capital letter p with stroke
    ('\u{2C64}', 'r'),  // latin capital letter r with tail
    ('\u{2C65}', 'a'),  // latin small letter a with stroke
    ('\u{2C66}', 't'),  // latin small letter t with diagonal stroke
    ('\u{2C67}', 'h'),  // latin capital letter h with descender
    ('\u{2C68}', 'h'),  // latin small letter h with descender
    ('\u{2C69}', 'k'),  // latin capital letter k with descender
    ('\u{2C6A}', 'k'),  // latin small letter k with descender
    ('\u{2C6B}', 'z'),  // latin capital letter z with descender
    ('\u{2C6C}', 'z'),  // latin small letter z with descender
    ('\u{2C6E}', 'm'),  // latin capital letter m with hook
    ('\u{2C71}', 'v'),  // latin small letter v with right hook
    ('\u{2C72}', 'w'),  // latin capital letter w with hook
    ('\u{2C73}', 'w'),  // latin small letter w with hook
    ('\u{2C74}', 'v'),  // latin small letter v with curl
    ('\u{2C78}', 'e'),  // latin small letter e with notch
    ('\u{2C7A}', 'o'),  // latin small letter o with low ring inside
    ('\u{2C7E}', 's'),  // latin capital letter s with swash tail
    ('\u{2C7F}', 'z'),  // latin capital letter z with swash tail
    ('\u{A730}', 'f'),  // latin letter small capital f
    ('\u{A731}', 's'),  // latin letter small capital s
    ('\u{A740}', 'k'),  // latin capital letter k with stroke
    ('\u{A741}', 'k'),  // latin small letter k with stroke
    ('\u{A742}', 'k'),  // latin capital letter k with diagonal stroke
    ('\u{A743}', 'k'),  // latin small letter k with diagonal stroke
    ('\u{A744}', 'k'),  // latin capital letter k with stroke and diagonal stroke
    ('\u{A745}', 'k'),  // latin small letter k with stroke and diagonal stroke
    ('\u{A748}', 'l'),  // latin capital letter l with high stroke
    ('\u{A749}', 'l'),  // latin small letter l with high stroke
    ('\u{A74A}', 'o'),  // latin capital letter o with long stroke overlay
    ('\u{A74B}', 'o'),  // latin small letter o with long stroke overlay
    ('\u{A74C}', 'o'),  // latin capital letter o with loop
    ('\u{A74D}', 'o'),  // latin small letter o with loop
    ('\u{A750}', 'p'),  // latin capital letter p with stroke through descender
    ('\u{A751}', 'p'),  // latin small letter p with stroke through descender
    ('\u{A752}', 'p'),  // latin capital letter p with flourish
    ('\u{A753}', 'p'),  // latin small letter p with flourish
    ('\u{A754}', 'p'),  // latin capital letter p with squirrel tail
    ('\u{A755}', 'p'),  // latin small letter p with squirrel tail
    ('\u{A756}', 'q'),  // latin capital letter q with stroke through descender
    ('\u{A757}', 'q'),  // latin small letter q with stroke through descender
    ('\u{A758}', 'q'),  // latin capital letter q with diagonal stroke
    ('\u{A759}', 'q'),  // latin small letter q with diagonal stroke
    ('\u{A75E}', 'v'),  // latin capital letter v with diagonal stroke
    ('\u{A75F}', 'v'),  // latin small letter v with diagonal stroke
    ('\u{A78E}', 'l'),  // latin small letter l with retroflex hook and belt
    ('\u{A790}', 'n'),  // latin capital letter n with descender
    ('\u{A791}', 'n'),  // latin small letter n with descender
    ('\u{A792}', 'c'),  // latin capital letter c with bar
    ('\u{A793}', 'c'),  // latin small letter c with bar
    ('\u{A794}', 'c'),  // latin small letter c with palatal hook
    ('\u{A795}', 'h'),  // latin small letter h with palatal hook
    ('\u{A796}', 'b'),  // latin capital letter b with flourish
    ('\u{A797}', 'b'),  // latin small letter b with flourish
    ('\u{A798}', 'f'),  // latin capital letter f with stroke
    ('\u{A799}', 'f'),  // latin small letter f with stroke
    ('\u{A7A0}', 'g'),  // latin capital letter g with oblique stroke
    ('\u{A7A1}', 'g'),  // latin small letter g with oblique stroke
    ('\u{A7A2}', 'k'),  // latin capital letter k with oblique stroke
    ('\u{A7A3}', 'k'),  // latin small letter k with oblique stroke
    ('\u{A7A4}', 'n'),  // latin capital letter n with oblique stroke
    ('\u{A7A5}', 'n'),  // latin small letter n with oblique stroke
    ('\u{A7A6}', 'r'),  // latin capital letter r with oblique stroke
    ('\u{A7A7}', 'r'),  // latin small letter r with oblique stroke
    ('\u{A7A8}', 's'),  // latin capital letter s with oblique stroke
    ('\u{A7A9}', 's'),  // latin small letter s with oblique stroke
    ('\u{A7AA}', 'h'),  // latin capital letter h with hook
    ('\u{A7AD}', 'l'),  // latin capital letter l with belt
    ('\u{A7AE}', 'i'),  // latin capital letter small capital i
    ('\u{A7AF}', 'q'),  // latin letter small capital q
    ('\u{A7B2}', 'j'),  // latin capital letter j with crossed-tail
    ('\u{A7B8}', 'u'),  // latin capital letter u with stroke
    ('\u{A7B9}', 'u'),  // latin small letter u with stroke
    ('\u{A7C4}', 'c'),  // latin capital letter c with palatal hook
    ('\u{A7C5}', 's'),  // latin capital letter s with hook
    ('\u{A7C6}', 'z'),  // latin capital letter z with palatal hook
    ('\u{A7C7}', 'd'),  // latin capital letter d with short stroke overlay
    ('\u{A7C8}', 'd'),  // latin small letter d with short stroke overlay
    ('\u{A7C9}', 's'),  // latin capital letter s with short stroke overlay
    ('\u{A7CA}', 's'),  // latin small letter s with short stroke overlay
    ('\u{A7CC}', 's'),  // latin capital letter s with diagonal stroke
    ('\u{A7CD}', 's'),  // latin small letter s with diagonal stroke
    ('\u{AB34}', 'e'),  // latin small letter e with flourish
    ('\u{AB37}', 'l'),  // latin small letter l with inverted lazy s
    ('\u{AB38}', 'l'),  // latin small letter l with double middle tilde
    ('\u{AB39}', 'l'),  // latin small letter l with middle ring
    ('\u{AB3A}', 'm'),  // latin small letter m with crossed-tail
    ('\u{AB3B}', 'n'),  // latin small letter n with crossed-tail
    ('\u{AB49}', 'r'),  // latin small letter r with crossed-tail
    ('\u{AB4E}', 'u'),  // latin small letter u with short right leg
    ('\u{AB52}', 'u'),  // latin small letter u with left hook
    ('\u{AB56}', 'x'),  // latin small letter x with low right ring
    ('\u{AB57}', 'x'),  // latin small letter x with long left leg
    ('\u{AB58}', 'x'),  // latin small letter x with long left leg and low right ring
    ('\u{AB59}', 'x'),  // latin small letter x with long left leg with serif
    ('\u{AB5A}', 'y'),  // latin small letter y with short right leg
    ('\u{1DF09}', 't'), // latin small letter t with hook and retroflex hook
    ('\u{1DF11}', 'l'), // latin small letter l with fishhook
    ('\u{1DF13}', 'l'), // latin small letter l with belt and palatal hook
    ('\u{1DF16}', 'r'), // latin small letter r with fishhook and palatal hook
    ('\u{1DF1A}', 'i'), // latin small letter i with stroke and retroflex hook
    ('\u{1DF1B}', 'o'), // latin small letter o with retroflex hook
    ('\u{1DF1D}', 'c'), // latin small letter c with retroflex hook
    ('\u{1DF1E}', 's'), // latin small letter s with curl
    ('\u{1DF25}', 'd'), // latin small letter d with mid-height left hook
    ('\u{1DF26}', 'l'), // latin small letter l with mid-height left hook
    ('\u{1DF27}', 'n'), // latin small letter n with mid-height left hook
    ('\u{1DF28}', 'r'), // latin small letter r with mid-height left hook
    ('\u{1DF29}', 's'), // latin small letter s with mid-height left hook
    ('\u{1DF2A}', 't'), // latin small letter t with mid-height left hook
];
