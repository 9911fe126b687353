//! The IANA time zones a phone number's holder may be in, so that a campaign
//! checks its calling window in every one of them (`base::calling_window`).
//!
//! The country comes from libphonenumber (NANP islands such as Jamaica have
//! their own). Where a country spans zones, the number narrows them only
//! where that is reliable: NANP area codes in the US and Canada, the first
//! digit of Australian landlines. Otherwise the number may ring anywhere in
//! its country, so all of the country's zones are returned.

mod countries;

use countries::COUNTRY_ZONES;

/// The zones `number_e164` may ring in, sorted and deduplicated; empty when
/// the number is not valid or its country has no zone we know.
pub fn zones_for(number_e164: &str) -> Vec<&'static str> {
    let Ok(number) = phonenumber::parse(None, number_e164.trim()) else {
        return Vec::new();
    };
    if !phonenumber::is_valid(&number) {
        return Vec::new();
    }
    let Some(region) = number.country().id() else {
        return Vec::new();
    };
    let region: &str = region.as_ref();
    let country = country_zones(region);
    let national = number.national().value().to_string();
    let mut zones = match region {
        "US" | "CA" => national
            .get(..3)
            .and_then(|code| code.parse().ok())
            .and_then(nanp_area_code)
            .unwrap_or(country)
            .to_vec(),
        "AU" => australia(&national).unwrap_or(country).to_vec(),
        _ => country.to_vec(),
    };
    zones.sort_unstable();
    zones.dedup();
    zones
}

/// All the zones of an ISO 3166 country ("US"); empty when unknown.
pub fn country_zones(country: &str) -> &'static [&'static str] {
    COUNTRY_ZONES
        .binary_search_by(|(code, _)| (*code).cmp(country))
        .map_or(&[], |i| COUNTRY_ZONES[i].1)
}

fn nanp_area_code(code: u16) -> Option<&'static [&'static str]> {
    NANP_AREA_CODES
        .binary_search_by_key(&code, |(area_code, _)| *area_code)
        .ok()
        .map(|i| NANP_AREA_CODES[i].1)
}

/// Australian landlines by the national number's first digit (the trunk
/// "0" dropped). Mobiles (4) and the rest roam the whole country: None.
fn australia(national: &str) -> Option<&'static [&'static str]> {
    match national.as_bytes().first()? {
        b'2' => Some(&["Australia/Sydney"]),
        b'3' => Some(&["Australia/Hobart", "Australia/Melbourne"]),
        b'7' => Some(&["Australia/Brisbane"]),
        b'8' => Some(&["Australia/Adelaide", "Australia/Darwin", "Australia/Perth"]),
        _ => None,
    }
}

// Zone sets for NANP area codes. One zone stands for all that keep the same
// clock today; an area code whose territory spans clocks lists each.
const ET: &[&str] = &["America/New_York"];
const CT: &[&str] = &["America/Chicago"];
const MT: &[&str] = &["America/Denver"];
const PT: &[&str] = &["America/Los_Angeles"];
const ET_CT: &[&str] = &["America/Chicago", "America/New_York"];
const CT_MT: &[&str] = &["America/Chicago", "America/Denver"];
/// Arizona keeps MST all year.
const AZ: &[&str] = &["America/Phoenix"];
/// Arizona's north: the Navajo Nation keeps DST.
const AZ_NAVAJO: &[&str] = &["America/Denver", "America/Phoenix"];
const MI: &[&str] = &["America/Detroit"];
/// Michigan's Upper Peninsula: four counties on Central time.
const MI_UP: &[&str] = &["America/Detroit", "America/Menominee"];
const IN: &[&str] = &["America/Indiana/Indianapolis"];
/// Northwest Indiana: Chicago's suburbs on Central, a few counties Eastern.
const IN_NW: &[&str] = &["America/Chicago", "America/Indiana/Indianapolis"];
/// North Indiana: Eastern, Starke county Central.
const IN_N: &[&str] = &[
    "America/Indiana/Indianapolis",
    "America/Indiana/Knox",
    "America/Indiana/Winamac",
];
/// South Indiana: Evansville and Perry county on Central, the rest Eastern.
const IN_S: &[&str] = &[
    "America/Chicago",
    "America/Indiana/Indianapolis",
    "America/Indiana/Marengo",
    "America/Indiana/Petersburg",
    "America/Indiana/Tell_City",
    "America/Indiana/Vevay",
    "America/Indiana/Vincennes",
];
const KY_LOUISVILLE: &[&str] = &["America/Kentucky/Louisville", "America/New_York"];
/// East Kentucky: Eastern, two counties Central.
const KY_E: &[&str] = &[
    "America/Chicago",
    "America/Kentucky/Monticello",
    "America/New_York",
];
/// North Dakota: Central, the southwest Mountain.
const ND: &[&str] = &[
    "America/Chicago",
    "America/Denver",
    "America/North_Dakota/Beulah",
    "America/North_Dakota/Center",
    "America/North_Dakota/New_Salem",
];
/// Idaho: Mountain in the south, Pacific in the panhandle; eastern Oregon
/// (541, 458) is the same pair the other way round.
const PT_MT_BOISE: &[&str] = &["America/Boise", "America/Los_Angeles"];
/// Nevada: Pacific, West Wendover and Jackpot Mountain.
const NV_N: &[&str] = &["America/Denver", "America/Los_Angeles"];
const AK: &[&str] = &[
    "America/Adak",
    "America/Anchorage",
    "America/Juneau",
    "America/Metlakatla",
    "America/Nome",
    "America/Sitka",
    "America/Yakutat",
];
const HI: &[&str] = &["Pacific/Honolulu"];

const TORONTO: &[&str] = &["America/Toronto"];
/// Quebec's east: Eastern, the Magdalen Islands Atlantic, the Lower North
/// Shore AST all year.
const QC_E: &[&str] = &["America/Blanc-Sablon", "America/Halifax", "America/Toronto"];
/// Northwest Ontario: Thunder Bay Eastern, Kenora Central, Atikokan EST.
const ON_NW: &[&str] = &["America/Atikokan", "America/Toronto", "America/Winnipeg"];
const WINNIPEG: &[&str] = &["America/Winnipeg"];
/// Saskatchewan: CST all year, Lloydminster on Alberta's clock.
const SK: &[&str] = &[
    "America/Edmonton",
    "America/Regina",
    "America/Swift_Current",
];
const EDMONTON: &[&str] = &["America/Edmonton"];
const VANCOUVER: &[&str] = &["America/Vancouver"];
/// All of British Columbia (250 and its overlays): Pacific, the Kootenays
/// Mountain, the Peace River and Creston MST all year.
const BC: &[&str] = &[
    "America/Creston",
    "America/Dawson_Creek",
    "America/Edmonton",
    "America/Fort_Nelson",
    "America/Vancouver",
];
const NB: &[&str] = &["America/Moncton"];
const NS_PE: &[&str] = &["America/Glace_Bay", "America/Halifax"];
/// Newfoundland on its own time, most of Labrador Atlantic.
const NL: &[&str] = &["America/Goose_Bay", "America/St_Johns"];
/// Yukon, Northwest Territories and Nunavut share one area code.
const NORTH: &[&str] = &[
    "America/Atikokan",
    "America/Cambridge_Bay",
    "America/Dawson",
    "America/Edmonton",
    "America/Inuvik",
    "America/Iqaluit",
    "America/Rankin_Inlet",
    "America/Resolute",
    "America/Whitehorse",
];

/// Geographic US and Canadian area codes, sorted for a binary search. Codes
/// not listed (toll-free, new overlays) fall back to the whole country.
/// Territories with their own region (Puerto Rico, Guam, …) are not here.
const NANP_AREA_CODES: &[(u16, &[&str])] = &[
    (201, ET),
    (202, ET),
    (203, ET),
    (204, WINNIPEG),
    (205, CT),
    (206, PT),
    (207, ET),
    (208, PT_MT_BOISE),
    (209, PT),
    (210, CT),
    (212, ET),
    (213, PT),
    (214, CT),
    (215, ET),
    (216, ET),
    (217, CT),
    (218, CT),
    (219, IN_NW),
    (220, ET),
    (223, ET),
    (224, CT),
    (225, CT),
    (226, TORONTO),
    (227, ET),
    (228, CT),
    (229, ET),
    (231, MI),
    (234, ET),
    (236, BC),
    (239, ET),
    (240, ET),
    (248, MI),
    (249, TORONTO),
    (250, BC),
    (251, CT),
    (252, ET),
    (253, PT),
    (254, CT),
    (256, CT),
    (260, IN),
    (262, CT),
    (263, TORONTO),
    (267, ET),
    (269, MI),
    (270, ET_CT),
    (272, ET),
    (274, CT),
    (276, ET),
    (279, PT),
    (281, CT),
    (283, ET),
    (289, TORONTO),
    (301, ET),
    (302, ET),
    (303, MT),
    (304, ET),
    (305, ET),
    (306, SK),
    (307, MT),
    (308, CT_MT),
    (309, CT),
    (310, PT),
    (312, CT),
    (313, MI),
    (314, CT),
    (315, ET),
    (316, CT),
    (317, IN),
    (318, CT),
    (319, CT),
    (320, CT),
    (321, ET),
    (323, PT),
    (324, ET),
    (325, CT),
    (326, ET),
    (327, CT),
    (330, ET),
    (331, CT),
    (332, ET),
    (334, CT),
    (336, ET),
    (337, CT),
    (339, ET),
    (341, PT),
    (343, TORONTO),
    (346, CT),
    (347, ET),
    (350, PT),
    (351, ET),
    (352, ET),
    (353, CT),
    (354, TORONTO),
    (360, PT),
    (361, CT),
    (363, ET),
    (364, ET_CT),
    (365, TORONTO),
    (367, QC_E),
    (368, EDMONTON),
    (380, ET),
    (382, TORONTO),
    (385, MT),
    (386, ET),
    (401, ET),
    (402, CT),
    (403, EDMONTON),
    (404, ET),
    (405, CT),
    (406, MT),
    (407, ET),
    (408, PT),
    (409, CT),
    (410, ET),
    (412, ET),
    (413, ET),
    (414, CT),
    (415, PT),
    (416, TORONTO),
    (417, CT),
    (418, QC_E),
    (419, ET),
    (423, ET_CT),
    (424, PT),
    (425, PT),
    (428, NB),
    (430, CT),
    (431, WINNIPEG),
    (432, CT_MT),
    (434, ET),
    (435, MT),
    (437, TORONTO),
    (438, TORONTO),
    (440, ET),
    (442, PT),
    (443, ET),
    (445, ET),
    (447, CT),
    (448, ET_CT),
    (450, TORONTO),
    (458, PT_MT_BOISE),
    (463, IN),
    (464, CT),
    (468, TORONTO),
    (469, CT),
    (470, ET),
    (472, ET),
    (474, SK),
    (475, ET),
    (478, ET),
    (479, CT),
    (480, AZ),
    (484, ET),
    (501, CT),
    (502, KY_LOUISVILLE),
    (503, PT),
    (504, CT),
    (505, MT),
    (506, NB),
    (507, CT),
    (508, ET),
    (509, PT),
    (510, PT),
    (512, CT),
    (513, ET),
    (514, TORONTO),
    (515, CT),
    (516, ET),
    (517, MI),
    (518, ET),
    (519, TORONTO),
    (520, AZ),
    (530, PT),
    (531, CT),
    (534, CT),
    (539, CT),
    (540, ET),
    (541, PT_MT_BOISE),
    (548, TORONTO),
    (551, ET),
    (557, CT),
    (559, PT),
    (561, ET),
    (562, PT),
    (563, CT),
    (564, PT),
    (567, ET),
    (570, ET),
    (571, ET),
    (572, CT),
    (573, CT),
    (574, IN_N),
    (575, MT),
    (579, TORONTO),
    (580, CT),
    (581, QC_E),
    (582, ET),
    (584, WINNIPEG),
    (585, ET),
    (586, MI),
    (587, EDMONTON),
    (601, CT),
    (602, AZ),
    (603, ET),
    (604, VANCOUVER),
    (605, CT_MT),
    (606, KY_E),
    (607, ET),
    (608, CT),
    (609, ET),
    (610, ET),
    (612, CT),
    (613, TORONTO),
    (614, ET),
    (615, CT),
    (616, MI),
    (617, ET),
    (618, CT),
    (619, PT),
    (620, CT_MT),
    (623, AZ),
    (626, PT),
    (628, PT),
    (629, CT),
    (630, CT),
    (631, ET),
    (636, CT),
    (639, SK),
    (640, ET),
    (641, CT),
    (646, ET),
    (647, TORONTO),
    (650, PT),
    (651, CT),
    (656, ET),
    (657, PT),
    (659, CT),
    (660, CT),
    (661, PT),
    (662, CT),
    (667, ET),
    (669, PT),
    (672, BC),
    (678, ET),
    (680, ET),
    (681, ET),
    (682, CT),
    (683, TORONTO),
    (689, ET),
    (701, ND),
    (702, PT),
    (703, ET),
    (704, ET),
    (705, TORONTO),
    (706, ET),
    (707, PT),
    (708, CT),
    (709, NL),
    (712, CT),
    (713, CT),
    (714, PT),
    (715, CT),
    (716, ET),
    (717, ET),
    (718, ET),
    (719, MT),
    (720, MT),
    (724, ET),
    (725, PT),
    (726, CT),
    (727, ET),
    (730, CT),
    (731, CT),
    (732, ET),
    (734, MI),
    (737, CT),
    (740, ET),
    (742, TORONTO),
    (743, ET),
    (747, PT),
    (753, TORONTO),
    (754, ET),
    (757, ET),
    (760, PT),
    (762, ET),
    (763, CT),
    (765, IN),
    (769, CT),
    (770, ET),
    (771, ET),
    (772, ET),
    (773, CT),
    (774, ET),
    (775, NV_N),
    (778, BC),
    (779, CT),
    (780, EDMONTON),
    (781, ET),
    (782, NS_PE),
    (785, CT_MT),
    (786, ET),
    (801, MT),
    (802, ET),
    (803, ET),
    (804, ET),
    (805, PT),
    (806, CT),
    (807, ON_NW),
    (808, HI),
    (810, MI),
    (812, IN_S),
    (813, ET),
    (814, ET),
    (815, CT),
    (816, CT),
    (817, CT),
    (818, PT),
    (819, TORONTO),
    (820, PT),
    (825, EDMONTON),
    (826, ET),
    (828, ET),
    (830, CT),
    (831, PT),
    (832, CT),
    (835, ET),
    (838, ET),
    (839, ET),
    (840, PT),
    (843, ET),
    (845, ET),
    (847, CT),
    (848, ET),
    (850, ET_CT),
    (854, ET),
    (856, ET),
    (857, ET),
    (858, PT),
    (859, ET),
    (860, ET),
    (862, ET),
    (863, ET),
    (864, ET),
    (865, ET),
    (867, NORTH),
    (870, CT),
    (872, CT),
    (873, TORONTO),
    (878, ET),
    (879, NL),
    (901, CT),
    (902, NS_PE),
    (903, CT),
    (904, ET),
    (905, TORONTO),
    (906, MI_UP),
    (907, AK),
    (908, ET),
    (909, PT),
    (910, ET),
    (912, ET),
    (913, CT),
    (914, ET),
    (915, MT),
    (916, PT),
    (917, ET),
    (918, CT),
    (919, ET),
    (920, CT),
    (925, PT),
    (928, AZ_NAVAJO),
    (929, ET),
    (930, IN_S),
    (931, CT),
    (934, ET),
    (936, CT),
    (937, ET),
    (938, CT),
    (940, CT),
    (941, ET),
    (943, ET),
    (945, CT),
    (947, MI),
    (948, ET),
    (949, PT),
    (951, PT),
    (952, CT),
    (954, ET),
    (956, CT),
    (959, ET),
    (970, MT),
    (971, PT),
    (972, CT),
    (973, ET),
    (978, ET),
    (979, CT),
    (980, ET),
    (983, MT),
    (984, ET),
    (985, CT),
    (986, PT_MT_BOISE),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::calling_window::zone;

    fn valid(number: &str) -> bool {
        phonenumber::parse(None, number).is_ok_and(|n| phonenumber::is_valid(&n))
    }

    #[test]
    fn phone_zones_single_zone_numbers() {
        for (number, zones) in [
            ("+12125550123", ["America/New_York"]),
            ("+14155550123", ["America/Los_Angeles"]),
            ("+14165550123", ["America/Toronto"]),
            ("+447123456789", ["Europe/London"]),
            ("+919876543210", ["Asia/Kolkata"]),
            ("+61212345678", ["Australia/Sydney"]),
            ("+18765550123", ["America/Jamaica"]),
            ("+17875550123", ["America/Puerto_Rico"]),
            ("+13125550123", ["America/Chicago"]),
            ("+13035550123", ["America/Denver"]),
            ("+16025550123", ["America/Phoenix"]),
            ("+18085550123", ["Pacific/Honolulu"]),
            ("+16045550123", ["America/Vancouver"]),
        ] {
            assert!(valid(number), "{number} must be valid for this test");
            assert_eq!(zones_for(number), zones, "{number}");
        }
    }

    #[test]
    fn phone_zones_area_codes_spanning_zones_list_each() {
        for (number, zones) in [
            (
                "+12085550123",
                &["America/Boise", "America/Los_Angeles"][..],
            ),
            ("+18505550123", &["America/Chicago", "America/New_York"]),
            ("+19285550123", &["America/Denver", "America/Phoenix"]),
            ("+19065550123", &["America/Detroit", "America/Menominee"]),
            ("+19075550123", AK),
            ("+13065550123", SK),
        ] {
            assert!(valid(number), "{number} must be valid for this test");
            assert_eq!(zones_for(number), zones, "{number}");
        }
    }

    #[test]
    fn phone_zones_australia_by_first_digit() {
        let mobile = zones_for("+61412345678");
        assert!(valid("+61412345678"));
        assert!(mobile.len() > 3, "{mobile:?}");
        assert_eq!(mobile, country_zones("AU"));
        for (number, zones) in [
            (
                "+61312345678",
                &["Australia/Hobart", "Australia/Melbourne"][..],
            ),
            ("+61731234567", &["Australia/Brisbane"]),
            (
                "+61891234567",
                &["Australia/Adelaide", "Australia/Darwin", "Australia/Perth"],
            ),
        ] {
            assert!(valid(number), "{number} must be valid for this test");
            assert_eq!(zones_for(number), zones, "{number}");
        }
    }

    #[test]
    fn phone_zones_other_multi_zone_countries_get_all_their_zones() {
        let brazil = zones_for("+5511987654321");
        assert!(valid("+5511987654321"));
        assert!(brazil.contains(&"America/Sao_Paulo") && brazil.contains(&"America/Manaus"));
        assert_eq!(brazil, country_zones("BR"));
        // Toll-free: no area, so anywhere in the country.
        assert!(valid("+18005550123"));
        assert_eq!(zones_for("+18005550123"), country_zones("US"));
    }

    #[test]
    fn phone_zones_invalid_numbers_have_none() {
        for bad in [
            "",
            "+",
            "hello",
            "+1234567890",
            "+15555555555",
            "+99912345678",
            "+44123",
        ] {
            assert!(zones_for(bad).is_empty(), "{bad}");
        }
        assert!(country_zones("ZZ").is_empty());
    }

    #[test]
    fn phone_zones_tables_are_sorted_and_resolve() {
        assert!(COUNTRY_ZONES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(NANP_AREA_CODES.windows(2).all(|w| w[0].0 < w[1].0));
        let mut all: Vec<&str> = Vec::new();
        for (country, zones) in COUNTRY_ZONES {
            assert!(!zones.is_empty(), "{country}");
            assert!(zones.windows(2).all(|w| w[0] < w[1]), "{country}");
            all.extend(*zones);
        }
        let nanp: Vec<&str> = [country_zones("US"), country_zones("CA")].concat();
        for (code, zones) in NANP_AREA_CODES {
            assert!((200..=999).contains(code), "{code}");
            assert!(zones.windows(2).all(|w| w[0] < w[1]), "{code}");
            for zone in *zones {
                assert!(nanp.contains(zone), "{code}: {zone} is not a US or CA zone");
            }
            all.extend(*zones);
        }
        for digit in '0'..='9' {
            all.extend(australia(&digit.to_string()).unwrap_or_default());
        }
        for name in all {
            assert!(
                zone(name).is_some(),
                "{name} is not in the bundled tz database"
            );
        }
    }

    /// Every listed area code is in service per libphonenumber, and its
    /// zones belong to the country it gives the code's numbers: a US code
    /// is not mapped to Canadian zones.
    #[test]
    fn phone_zones_area_codes_match_their_country() {
        for (code, zones) in NANP_AREA_CODES {
            let number = ["2345678", "5550123", "4567890", "7654321"]
                .iter()
                .map(|line| format!("+1{code}{line}"))
                .find(|number| valid(number))
                .unwrap_or_else(|| panic!("no valid number in area code {code}"));
            let region = phonenumber::parse(None, &number)
                .unwrap()
                .country()
                .id()
                .unwrap();
            let country = country_zones(region.as_ref());
            for zone in *zones {
                assert!(country.contains(zone), "{number} ({region:?}): {zone}");
            }
        }
    }
}
