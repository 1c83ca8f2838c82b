//! Write-back: create FHIR resources from an NDJSON file (`fhirsync push`).
//!
//! Protocol, in order:
//! 1. **Capability check**: the endpoint's CapabilityStatement must list the `create`
//!    interaction for the type ([`fhirsync_extract::plan::Capabilities::create`]).
//! 2. **Validation of the whole file before any request** ([`validate`]): each non-blank line a
//!    JSON object, `resourceType` equal to `--type`, a `Patient` reference (`subject` or
//!    `patient`) for patient-scoped types; a client-assigned `id` is dropped (the server assigns
//!    ids). By default one invalid line stops the push before anything is sent.
//! 3. **Duplicate key**: a resource without an `identifier` gets one,
//!    `urn:fhirsync:push|<sha-256 of the resource>` ([`PUSH_IDENTIFIER_SYSTEM`]), so the same
//!    line always carries the same key (switch off with `--no-identifier`).
//! 4. **Create** ([`send`]): `POST {base}/{Type}` with `Content-Type: application/fhir+json`,
//!    sequentially; the FHIR client never re-sends a POST by itself. `201` → created, id from
//!    `Location`; a 4xx → failed with the OperationOutcome text.
//! 5. **Unacknowledged create** (timeout, dropped connection, 5xx, 429): Epic has no
//!    conditional create (`If-None-Exist`), so before re-sending, the patient's resources of
//!    that type are searched and compared with [`same::same_resource`]; found → reported as
//!    created (with the server's id), absent → re-sent, search impossible or failing →
//!    `unconfirmed` (never re-sent blindly).

pub mod same;
pub mod send;
pub mod validate;

/// Identifier system of the key added to resources that carry no identifier.
pub const PUSH_IDENTIFIER_SYSTEM: &str = "urn:fhirsync:push";
