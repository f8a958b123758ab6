//! Who the shoppers are: names (mostly French, with the other origins common in France),
//! unique e-mail addresses on reserved example domains, fictional phone numbers, birth dates.

use chrono::{Days, NaiveDate};
use rand::Rng;
use std::collections::HashSet;

struct Origin {
    weight: f64,
    first: &'static [&'static str],
    last: &'static [&'static str],
}

const FRENCH_FIRST: &[&str] = &[
    "Camille",
    "Léa",
    "Manon",
    "Chloé",
    "Emma",
    "Inès",
    "Jade",
    "Louise",
    "Sarah",
    "Julie",
    "Marie",
    "Anne",
    "Nathalie",
    "Isabelle",
    "Sophie",
    "Céline",
    "Élodie",
    "Pauline",
    "Claire",
    "Lucie",
    "Margaux",
    "Juliette",
    "Alice",
    "Zoé",
    "Chantal",
    "Sylvie",
    "Martine",
    "Françoise",
    "Monique",
    "Hélène",
    "Thomas",
    "Lucas",
    "Hugo",
    "Louis",
    "Gabriel",
    "Nathan",
    "Jules",
    "Arthur",
    "Théo",
    "Maxime",
    "Antoine",
    "Nicolas",
    "Julien",
    "Pierre",
    "Alexandre",
    "Romain",
    "Guillaume",
    "Sébastien",
    "Olivier",
    "Laurent",
    "Philippe",
    "Éric",
    "Christophe",
    "Stéphane",
    "François",
    "Jean",
    "Michel",
    "Bernard",
    "Benoît",
    "Raphaël",
    "Léo",
    "Baptiste",
    "Clément",
    "Quentin",
    "Mathilde",
    "Agathe",
    "Anaïs",
    "Aurélien",
    "Gaëlle",
    "Jérôme",
];

const FRENCH_LAST: &[&str] = &[
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Michel",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Lefèvre",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Legrand",
    "Garnier",
    "Faure",
    "Rousseau",
    "Blanc",
    "Guérin",
    "Muller",
    "Henry",
    "Roussel",
    "Perrin",
    "Morin",
    "Mathieu",
    "Clément",
    "Gauthier",
    "Dumont",
    "Fontaine",
    "Chevalier",
    "Robin",
    "Masson",
    "Gérard",
    "Boyer",
    "Denis",
    "Lemaire",
    "Duval",
    "Joly",
    "Roche",
    "Meyer",
    "Meunier",
    "Marchand",
    "Dufour",
    "Blanchard",
    "Barbier",
    "Brun",
    "Dumas",
    "Brunet",
    "Schmitt",
    "Leroux",
    "Colin",
    "Renard",
    "Arnaud",
    "Caron",
    "Aubert",
    "Giraud",
    "Leclerc",
    "Vidal",
    "Bourgeois",
    "Renaud",
    "Lemoine",
    "Picard",
    "Gaillard",
    "Lacroix",
    "Fabre",
    "Dupuis",
    "Rivière",
    "Le Gall",
    "Le Roux",
    "Moulin",
    "Fleury",
    "Deschamps",
    "Carpentier",
    "Prévost",
    "Poirier",
    "Charpentier",
    "Huet",
    "Carré",
    "Breton",
    "Rémy",
];

const MAGHREB_FIRST: &[&str] = &[
    "Mohamed", "Karim", "Youssef", "Mehdi", "Sofiane", "Nadia", "Yasmine", "Samira", "Leïla",
    "Amira", "Rachid", "Nassim", "Fatima", "Ryan", "Ilyes", "Malika", "Walid", "Sonia",
];
const MAGHREB_LAST: &[&str] = &[
    "Benali", "Haddad", "Mansouri", "Bouzid", "Khelifi", "Saidi", "Belkacem", "Amrani", "Cherif",
    "Ouali", "Brahimi", "Zerrouki", "Benhamou", "Meziane", "Hamidi", "Djebbar",
];
const PORTUGUESE_FIRST: &[&str] = &[
    "João", "Ana", "Maria", "Pedro", "Rui", "Sofia", "Tiago", "Carla", "Paulo", "Beatriz",
];
const PORTUGUESE_LAST: &[&str] = &[
    "Da Silva",
    "Ferreira",
    "Pereira",
    "Rodrigues",
    "Alves",
    "Gonçalves",
    "Oliveira",
    "Lopes",
    "Teixeira",
    "Carvalho",
    "Costa",
    "Mendes",
];
const ITALIAN_FIRST: &[&str] = &[
    "Giulia",
    "Marco",
    "Luca",
    "Francesca",
    "Alessandro",
    "Chiara",
    "Matteo",
    "Elena",
    "Paolo",
];
const ITALIAN_LAST: &[&str] = &[
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Conti",
];
const SPANISH_FIRST: &[&str] = &[
    "Lucía", "Javier", "Carmen", "Pablo", "Diego", "Marta", "Sergio", "Alba", "Carlos", "Rosa",
];
const SPANISH_LAST: &[&str] = &[
    "García",
    "Fernández",
    "López",
    "Martínez",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Jiménez",
];
const WEST_AFRICAN_FIRST: &[&str] = &[
    "Aminata", "Moussa", "Fatou", "Ibrahima", "Awa", "Mamadou", "Mariam", "Ousmane",
];
const WEST_AFRICAN_LAST: &[&str] = &[
    "Diallo",
    "Traoré",
    "Diop",
    "Ndiaye",
    "Koné",
    "Camara",
    "Sow",
    "Cissé",
    "Coulibaly",
];
const VIETNAMESE_FIRST: &[&str] = &["Minh", "Linh", "Anh", "Thao", "Duc", "Lan", "Hoa", "Tuan"];
const VIETNAMESE_LAST: &[&str] = &["Nguyen", "Tran", "Pham", "Le", "Hoang", "Vu", "Dang"];
const GERMANIC_FIRST: &[&str] = &[
    "Lukas", "Anna", "Jonas", "Hannah", "Emily", "James", "Oliver", "Sophie", "Jakub", "Zofia",
];
const GERMANIC_LAST: &[&str] = &[
    "Schmidt",
    "Fischer",
    "Weber",
    "Wagner",
    "Smith",
    "Taylor",
    "Brown",
    "Kowalski",
    "Nowak",
    "Wiśniewski",
];

const ORIGINS: &[Origin] = &[
    Origin {
        weight: 0.70,
        first: FRENCH_FIRST,
        last: FRENCH_LAST,
    },
    Origin {
        weight: 0.10,
        first: MAGHREB_FIRST,
        last: MAGHREB_LAST,
    },
    Origin {
        weight: 0.05,
        first: PORTUGUESE_FIRST,
        last: PORTUGUESE_LAST,
    },
    Origin {
        weight: 0.04,
        first: ITALIAN_FIRST,
        last: ITALIAN_LAST,
    },
    Origin {
        weight: 0.04,
        first: SPANISH_FIRST,
        last: SPANISH_LAST,
    },
    Origin {
        weight: 0.03,
        first: WEST_AFRICAN_FIRST,
        last: WEST_AFRICAN_LAST,
    },
    Origin {
        weight: 0.02,
        first: VIETNAMESE_FIRST,
        last: VIETNAMESE_LAST,
    },
    Origin {
        weight: 0.02,
        first: GERMANIC_FIRST,
        last: GERMANIC_LAST,
    },
];

/// Reserved for documentation (RFC 2606), so no simulated address can reach a real inbox.
const EMAIL_DOMAINS: &[(&str, f64)] = &[
    ("example.com", 0.5),
    ("example.org", 0.25),
    ("example.net", 0.25),
];

fn pick<'a, R: Rng>(rng: &mut R, items: &'a [&'a str]) -> &'a str {
    items
        .get(rng.random_range(0..items.len().max(1)))
        .copied()
        .unwrap_or("Dominique")
}

/// Index drawn with probability proportional to `weights` (the last index if all are zero).
pub(crate) fn pick_weighted<R: Rng>(
    rng: &mut R,
    weights: impl Iterator<Item = f64> + Clone,
) -> usize {
    let total: f64 = weights.clone().filter(|w| *w > 0.0).sum();
    let mut x = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if w <= 0.0 {
            continue;
        }
        last = i;
        if x < w {
            return i;
        }
        x -= w;
    }
    last
}

/// A first and last name: mostly French, sometimes of another origin, sometimes mixed.
pub(crate) fn name<R: Rng>(rng: &mut R) -> (String, String) {
    let origin = &ORIGINS[pick_weighted(rng, ORIGINS.iter().map(|o| o.weight))];
    let last = pick(rng, origin.last);
    // Families mix: one in six non-French surnames comes with a French first name.
    let first = if origin.first != FRENCH_FIRST && rng.random::<f64>() < 0.17 {
        pick(rng, FRENCH_FIRST)
    } else {
        pick(rng, origin.first)
    };
    (first.to_string(), last.to_string())
}

/// Lower-case ASCII for an e-mail local part: accents dropped, spaces and apostrophes removed.
fn ascii_fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let mapped = match c {
            'à' | 'á' | 'â' | 'ä' | 'ã' => "a",
            'ç' => "c",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'í' | 'ì' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => "o",
            'ú' | 'ù' | 'û' | 'ü' => "u",
            'ś' => "s",
            'œ' => "oe",
            'a'..='z' | '0'..='9' | '-' => {
                out.push(c);
                continue;
            }
            _ => "",
        };
        out.push_str(mapped);
    }
    out
}

/// A believable address, unique among `taken` (a number is appended on collision).
pub(crate) fn email<R: Rng>(
    rng: &mut R,
    first: &str,
    last: &str,
    taken: &mut HashSet<String>,
) -> String {
    let (f, l) = (ascii_fold(first), ascii_fold(last));
    let initial: String = f.chars().take(1).collect();
    let local = match rng.random_range(0..5) {
        0 | 1 => format!("{f}.{l}"),
        2 => format!("{initial}{l}"),
        3 => format!("{f}.{l}{}", rng.random_range(60..100)),
        _ => format!("{f}_{l}{}", rng.random_range(1..100)),
    };
    let domain = EMAIL_DOMAINS[pick_weighted(rng, EMAIL_DOMAINS.iter().map(|d| d.1))].0;
    let mut candidate = format!("{local}@{domain}");
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{local}{n}@{domain}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// A French mobile number in E.164 form from the 06 39 98 xx xx block, which ARCEP keeps for
/// fiction. The shopper's index picks the number, so the first 10,000 shoppers never share one.
pub(crate) fn phone(index: usize) -> String {
    format!("+3363998{:04}", (index % 10_000) * 7919 % 10_000)
}

/// A birth date for an adult (18 to 85 on `today`, most between 30 and 60), or `None` for the
/// one in five shoppers who did not give it.
pub(crate) fn birth_date<R: Rng>(rng: &mut R, today: NaiveDate) -> Option<NaiveDate> {
    if rng.random::<f64>() < 0.2 {
        return None;
    }
    // Sum of three uniforms: a bell between 18 and 85 centred on 51.5, then skewed younger.
    let u: f64 = (0..3).map(|_| rng.random::<f64>()).sum::<f64>() / 3.0;
    let age_years = 18.0 + 67.0 * u.powf(1.25);
    let age_days = (age_years * 365.25) as u64;
    today.checked_sub_days(Days::new(age_days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn emails_are_ascii_and_unique() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut taken = HashSet::new();
        let mut all = Vec::new();
        for _ in 0..5000 {
            let (f, l) = name(&mut rng);
            all.push(email(&mut rng, &f, &l, &mut taken));
        }
        assert_eq!(taken.len(), 5000);
        for e in &all {
            assert!(
                e.is_ascii() && e.contains('@') && !e.contains(' ') && !e.contains('\''),
                "{e}"
            );
        }
        assert_eq!(ascii_fold("Le Gall"), "legall");
        assert_eq!(ascii_fold("Hélène"), "helene");
        assert_eq!(ascii_fold("Wiśniewski"), "wisniewski");
    }

    #[test]
    fn phones_are_distinct_for_ten_thousand_shoppers() {
        let mut all: Vec<String> = (0..10_000).map(phone).collect();
        assert!(
            all.iter()
                .all(|p| p.len() == 12 && p.starts_with("+3363998"))
        );
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 10_000);
    }
}
