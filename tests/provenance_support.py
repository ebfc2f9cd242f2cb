"""Content Credentials for tests: a throwaway certificate authority and a C2PA signer made with it."""

from __future__ import annotations

import datetime
import functools
import io
from dataclasses import dataclass

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

GENERATIVE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@dataclass(frozen=True)
class SigningIdentity:
    root_pem: bytes  # what a reader would hold as its trust anchor
    chain_pem: bytes  # the signer's certificate, then the root's
    key_pem: bytes


def _usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=not signer, crl_sign=not signer, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Imaginary Labs"),
        ]
    )


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None
) -> x509.CertificateBuilder:
    """A certificate, valid from yesterday for a year, of `subject`'s key: a root (self-issued) unless `issuer`."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(_usage(signer=issuer is not None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _root(subject: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _certificate(subject, key).sign(key, hashes.SHA256())


@functools.cache
def signing_identity() -> SigningIdentity:
    """A root CA and an ES256 end-entity certificate of "Imaginary Labs" that C2PA accepts for signing."""
    root_key, root = _root("Imaginary Root CA")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        _certificate("Imaginary Signer", key, issuer=root.subject)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    return SigningIdentity(
        root_pem=root_pem,
        chain_pem=leaf.public_bytes(serialization.Encoding.PEM) + root_pem,
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def with_credentials(
    data: bytes, mime: str, source_type: str | None = GENERATIVE, made_with: str = "Imaginary Diffusion"
) -> bytes:
    """The file signed with Content Credentials saying "Imaginary Diffusion 3.1" (or `made_with`) created it
    (of the given IPTC source type)."""
    action: dict[str, object] = {"action": "c2pa.created", "softwareAgent": {"name": made_with}}
    if source_type is not None:
        action["digitalSourceType"] = source_type
    manifest = {
        "claim_generator_info": [{"name": made_with, "version": "3.1"}],
        "title": "generated",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }
    return _signed(manifest, data, mime)


def edited_from(parent: bytes, data: bytes, mime: str = "image/jpeg") -> bytes:
    """`data` signed as "Imaginary Editor 2.0" opened `parent` (kept as its ingredient, "generated.jpg",
    with its own manifest) and adjusted its colours, naming no source type of its own."""
    manifest = {
        "claim_generator_info": [{"name": "Imaginary Editor", "version": "2.0"}],
        "title": "edited",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                        {"action": "c2pa.color_adjustments"},
                    ]
                },
            }
        ],
    }
    ingredient = {"title": "generated.jpg", "relationship": "parentOf", "label": "parent"}
    return _signed(manifest, data, mime, (ingredient, parent))


def _signed(manifest: dict, data: bytes, mime: str, ingredient: tuple[dict, bytes] | None = None) -> bytes:
    identity = signing_identity()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", identity.chain_pem, identity.key_pem, None))
    signed = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        if ingredient is not None:
            builder.add_ingredient(ingredient[0], mime, io.BytesIO(ingredient[1]))
        builder.sign(signer, mime, io.BytesIO(data), signed)
    return signed.getvalue()


def other_root_pem() -> bytes:
    """A root certificate that has signed nothing here."""
    return _root("Someone Else's Root")[1].public_bytes(serialization.Encoding.PEM)
