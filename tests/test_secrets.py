"""SecretRefs resolve in activities only, with typed errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from metalflow.api.models import SecretRef
from metalflow.runtime.secrets import load_yaml, resolve


def test_file_secret_and_kubernetes_manifest_form(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text("username: admin\npassword: s3cret\n")
    got = resolve(SecretRef(name="bmc", path=str(plain)))
    assert got.data == {"username": "admin", "password": "s3cret"}
    assert "s3cret" not in repr(got)
    manifest = tmp_path / "k8s.yaml"
    manifest.write_text("kind: Secret\ndata:\n  password: czNjcmV0\nstringData:\n  username: admin\n")
    assert resolve(SecretRef(name="bmc", path=str(manifest))).data["password"] == "s3cret"


def test_missing_file_is_permanent_and_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as err:
        resolve(SecretRef(name="bmc", path=str(tmp_path / "nope.yaml")))
    assert err.value.type == "SecretNotFound" and err.value.non_retryable
    assert "nope.yaml" in err.value.message


def test_missing_key_lists_the_keys_present(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("username: admin\n")
    ref = SecretRef(name="bmc", path=str(f))
    with pytest.raises(ApplicationError, match=r"no non-empty key 'password'.*\['username'\]") as err:
        resolve(ref).require("password", ref)
    assert err.value.type == "SecretInvalid"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: hunter2-secret: [\n", 2),  # scanner: the fault's own line
        ("a: 1\nb: 'hunter2-unterminated\n", 3),  # the parser stops at the end
        ("a: 1\nb: hunter2-bell-\x07\n", 2),  # reader: a character YAML refuses (no mark)
    ],
    ids=["scanner", "unterminated", "reader"],
)
def test_malformed_yaml_error_names_the_line_and_quotes_nothing(text: str, line: int) -> None:
    with pytest.raises(ApplicationError) as err:
        load_yaml(text, "key 'networkData' of Secret ns/nd")
    assert err.value.type == "SecretMalformedYAML" and err.value.non_retryable
    assert err.value.message == (
        "key 'networkData' of Secret ns/nd is not valid YAML "
        f"(the parser stopped at line {line}); fix the Secret"
    )
