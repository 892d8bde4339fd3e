"""Brazilian identifiers: the shared vectors, normalisation, reasons and plate equivalence."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.schemas import ids

# The shared vectors (SPEC: data/brazil_ids.json), copied into tests/data.
VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "brazil_ids.json").read_text()
)

CHECKS: dict[str, Callable[[str], str | None]] = {
    "cpf": ids.check_cpf,
    "cnpj": ids.check_cnpj,
    "renavam": ids.check_renavam,
    "cnh": ids.check_cnh,
}


def _cases(group: str) -> list[tuple[str, str]]:
    return [(family, value) for family in CHECKS for value in VECTORS[family][group]]


@pytest.mark.parametrize(("family", "value"), _cases("valid"))
def test_valid_vector_is_accepted(family: str, value: str) -> None:
    assert CHECKS[family](value) is None


@pytest.mark.parametrize(("family", "value"), _cases("invalid"))
def test_invalid_vector_is_rejected_with_a_reason(family: str, value: str) -> None:
    reason = CHECKS[family](value)
    assert isinstance(reason, str) and reason


@pytest.mark.parametrize(
    "plate", VECTORS["plate"]["valid_old"] + VECTORS["plate"]["valid_mercosul"]
)
def test_valid_plate_vector_is_accepted(plate: str) -> None:
    assert ids.check_plate(plate) is None


@pytest.mark.parametrize("plate", VECTORS["plate"]["invalid"])
def test_invalid_plate_vector_is_rejected_with_the_accepted_formats(plate: str) -> None:
    assert ids.check_plate(plate) == (
        "must be 3 letters and 4 digits (ABC1234) or Mercosul (ABC1D23)"
    )


@pytest.mark.parametrize(("old", "mercosul"), VECTORS["plate"]["equivalent"])
def test_equivalent_plates_share_one_canonical_key(old: str, mercosul: str) -> None:
    assert ids.canonical_plate_key(old) == ids.canonical_plate_key(mercosul) == mercosul
    assert ids.plate_equivalents(old) == ids.plate_equivalents(mercosul) == (old, mercosul)


# --- reasons ----------------------------------------------------------------------------------


def test_cpf_with_wrong_check_digit_is_rejected_with_reason() -> None:
    assert ids.check_cpf("529.982.247-26") == "check digit mismatch"


def test_cpf_of_one_repeated_digit_is_rejected_even_though_its_digits_check() -> None:
    assert ids.check_cpf("111.111.111-11") == "all digits repeated"


def test_short_cpf_is_rejected_for_its_length() -> None:
    assert ids.check_cpf("5299822472") == "must have 11 digits"
    assert ids.check_cpf("") == "must have 11 digits"


def test_cpf_with_letters_is_rejected_as_non_digits() -> None:
    assert ids.check_cpf("529.982.247-2X") == "must contain only digits"
    assert ids.check_cpf("５２９９８２２４７２５") == "must contain only digits"  # full-width


def test_cnpj_reasons_name_length_shape_and_check_digits() -> None:
    assert ids.check_cnpj("1122233300018") == "must have 14 characters"
    assert ids.check_cnpj("11.222.333/0001-8A") == (
        "must be 12 digits or letters followed by 2 check digits"
    )
    assert ids.check_cnpj("00.000.000/0000-00") == "all digits repeated"
    assert ids.check_cnpj("11.222.333/0001-82") == "check digit mismatch"


def test_alphanumeric_cnpj_is_accepted_in_lower_case_and_stored_upper() -> None:
    assert ids.check_cnpj("12.abc.345/01de-35") is None
    assert ids.normalize_cnpj("12.abc.345/01de-35") == "12ABC34501DE35"


def test_renavam_and_cnh_reasons() -> None:
    assert ids.check_renavam("86769597309") == "check digit mismatch"
    assert ids.check_renavam("1234567890") == "must have 11 digits"
    assert ids.check_cnh("98765432100") == "check digit mismatch"
    assert ids.check_cnh("11111111111") == "all digits repeated"


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalize", "raw", "stored"),
    [
        (ids.normalize_plate, "abc-1234", "ABC1234"),
        (ids.normalize_plate, " bra 2e19 ", "BRA2E19"),
        (ids.normalize_cpf, "529.982.247-25", "52998224725"),
        (ids.normalize_cnpj, "11.222.333/0001-81", "11222333000181"),
        (ids.normalize_cnh, "097703047-34", "09770304734"),
        (ids.normalize_renavam, "86769597308", "86769597308"),
    ],
)
def test_normalisation_strips_formatting(
    normalize: Callable[[str], str], raw: str, stored: str
) -> None:
    assert normalize(raw) == stored
    assert normalize(stored) == stored


def test_nine_digit_renavam_is_left_padded_to_eleven() -> None:
    assert ids.normalize_renavam("123456789") == "00123456789"
    assert ids.check_renavam("123456789") is None
    assert ids.check_renavam("00123456789") is None


def test_normalisation_never_raises_on_garbage() -> None:
    for normalize in (ids.normalize_cpf, ids.normalize_cnpj, ids.normalize_plate):
        assert normalize("não é um número") == normalize(normalize("não é um número"))


# --- plates -----------------------------------------------------------------------------------


def test_old_plate_maps_to_mercosul_by_replacing_the_fifth_digit_with_a_letter() -> None:
    assert ids.canonical_plate_key("abc-1234") == "ABC1C34"
    assert ids.canonical_plate_key("XYZ9099") == "XYZ9A99"
    assert ids.canonical_plate_key("XYZ9999") == "XYZ9J99"


def test_mercosul_plate_past_j_has_no_old_twin() -> None:
    assert ids.plate_equivalents("BRA2K19") == ("BRA2K19",)
    assert ids.canonical_plate_key("BRA2K19") == "BRA2K19"


def test_canonical_key_of_an_invalid_plate_raises() -> None:
    with pytest.raises(ValueError, match="not a valid plate"):
        ids.canonical_plate_key("AB12345")


def test_mercosul_plate_is_recognised() -> None:
    assert ids.is_mercosul_plate("bra-2e19")
    assert not ids.is_mercosul_plate("ABC1234")


# --- properties (seeded, against independent reference implementations) -----------------------


def _ref_dv(values: list[int], weights: list[int]) -> int:
    remainder = sum(v * w for v, w in zip(values, weights, strict=True)) % 11
    return 0 if remainder < 2 else 11 - remainder


def _ref_cpf(base: str) -> str:
    digits = [int(c) for c in base]
    first = _ref_dv(digits, [10, 9, 8, 7, 6, 5, 4, 3, 2])
    return base + str(first) + str(_ref_dv([*digits, first], [11, 10, 9, 8, 7, 6, 5, 4, 3, 2]))


def _ref_cnpj(base: str) -> str:
    values = [ord(c) - 48 for c in base]
    first = _ref_dv(values, [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    second = _ref_dv([*values, first], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    return base + str(first) + str(second)


def test_reference_implementations_agree_with_the_vectors() -> None:
    assert _ref_cpf("529982247") == "52998224725"
    assert _ref_cnpj("112223330001") == "11222333000181"
    assert _ref_cnpj("12ABC34501DE") == "12ABC34501DE35"


def test_generated_cpfs_validate_round_trip_and_break_on_any_check_digit_change() -> None:
    rng = random.Random(2026)
    for _ in range(500):
        cpf = _ref_cpf("".join(rng.choices(string.digits, k=9)))
        if len(set(cpf)) == 1:
            continue
        formatted = f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"
        assert ids.check_cpf(formatted) is None
        assert ids.normalize_cpf(formatted) == cpf
        wrong = cpf[:10] + str((int(cpf[10]) + 1) % 10)
        assert ids.check_cpf(wrong) == "check digit mismatch"


def test_generated_alphanumeric_cnpjs_validate_and_break_on_any_check_digit_change() -> None:
    rng = random.Random(7)
    for _ in range(500):
        cnpj = _ref_cnpj("".join(rng.choices(string.digits + string.ascii_uppercase, k=12)))
        assert ids.check_cnpj(cnpj.lower()) is None
        wrong = cnpj[:12] + str((int(cnpj[12]) + 1) % 10) + cnpj[13]
        assert ids.check_cnpj(wrong) == "check digit mismatch"


def test_every_old_plate_round_trips_through_its_mercosul_twin() -> None:
    rng = random.Random(1)
    for _ in range(300):
        old = "".join(rng.choices(string.ascii_uppercase, k=3)) + "".join(
            rng.choices(string.digits, k=4)
        )
        twin = ids.canonical_plate_key(old)
        assert ids.check_plate(twin) is None and ids.is_mercosul_plate(twin)
        assert ids.plate_equivalents(twin) == (old, twin)


def test_identifier_table_covers_every_schema_format() -> None:
    assert set(ids.IDENTIFIERS) == {"plate", "renavam", "cpf", "cnpj", "cnh", "phone"}
    assert ids.IDENTIFIERS["cpf"].is_valid("529.982.247-25")
    phone = ids.IDENTIFIERS["phone"]
    assert phone.normalize("(11) 98765-4321") == "+5511987654321" and phone.is_valid(
        "+5511987654321"
    )
    assert phone.normalize("--------") == "--------" and not phone.is_valid("--------")


def test_letters_that_upper_case_into_latin_ones_are_no_plate_or_cnpj_letters() -> None:
    """ "ı".upper() is "I" and "ſ".upper() is "S": a plate or CNPJ typed with them is refused,
    not stored as another vehicle's or company's identifier."""
    assert ids.check_plate("IBC1234") is None and ids.check_plate("ABS1D23") is None
    assert ids.check_plate("ıBC1234") is not None and ids.check_plate("ABſ1D23") is not None
    cnpj = "12ABI34501DE" + ids.cnpj_check_digits("12ABI34501DE")
    assert ids.check_cnpj(cnpj) is None
    assert ids.check_cnpj(cnpj.replace("I", "ı")) is not None
