"""Typed, operator-facing errors. Activities raise these; Temporal carries the type name."""

from __future__ import annotations

from enum import StrEnum

from temporalio.exceptions import ApplicationError


# ---- error type names carried by non-retryable ApplicationErrors ----
class ErrorName(StrEnum):
    BMC_ADDRESS = "BMCAddressError"
    BMC_AUTH = "BMCAuthError"
    BMC_UNSUPPORTED = "BMCUnsupportedError"
    BMC_NOT_FOUND = "BMCSystemNotFound"
    BMC_TLS = "BMCCertificateUntrusted"
    BOOT_METHOD_NOT_BUILT = "BootMethodNotBuilt"
    PREPROVISIONING_NETWORK_DATA = "PreprovisioningNetworkDataInvalid"
    NETWORK_DATA_MAC = "NetworkDataUnknownMAC"
    DEPLOY_ISO_MISSING = "DeployISOMissing"
    SECRET_MISSING = "SecretNotFound"
    SECRET_INVALID = "SecretInvalid"
    SECRET_YAML = "SecretMalformedYAML"
    IMAGE_CHECKSUM = "ImageChecksumMismatch"
    IMAGE_UNAVAILABLE = "ImageUnavailable"
    IMAGE_FORMAT = "ImageFormatError"
    IMAGE_TOO_LARGE = "ImageTooLarge"
    IMAGE_SPOOL_FULL = "ImageDoesNotFitInRamdisk"
    OCI_NOT_FOUND = "OciImageNotFound"
    OCI_AUTH = "OciAuthError"
    OCI_NOT_DISK_IMAGE = "OciNotADiskImage"
    OCI_MEDIA_TYPE = "OciUnsupportedMediaType"
    NO_ROOT_DEVICE = "NoRootDeviceMatch"
    CLUSTER_INFO_MISSING = "ClusterInfoMissing"
    NODE_NOT_READY = "NodeNotReady"
    JOIN_TOKEN_EXPIRED = "JoinTokenExpired"
    KUBEADM_JOIN_FAILED = "KubeadmJoinFailed"
    NODE_DRAIN_TIMEOUT = "NodeDrainTimeout"
    RAMDISK_TIMEOUT = "RamdiskNeverBooted"
    INVALID_SPEC = "InvalidSpec"
    UNKNOWN_DEPLOY_METHOD = "UnknownDeployMethod"
    CONFIG_DRIVE_PARTITION = "ConfigDrivePartitionError"
    # hosts enrolled without a MAC (issue 21): matched by their SMBIOS system UUID
    NO_BOOT_IDENTITY = "NoBootIdentity"
    DUPLICATE_SYSTEM_UUID = "DuplicateSystemUUID"
    SYSTEM_UUID_CHANGED = "SystemUUIDChanged"
    # verified erase (spec.erase)
    ERASE_UNSUPPORTED = "EraseMethodUnsupported"
    ERASE_FAILED = "EraseFailed"
    # hardware settings (HostFirmwareSettings)
    INVALID_FIRMWARE_SETTINGS = "InvalidFirmwareSettings"
    FIRMWARE_SETTINGS_NOT_APPLIED = "FirmwareSettingsNotApplied"
    FIRMWARE_UPDATE_FAILED = "FirmwareUpdateFailed"
    RAID_CONFIG = "RAIDConfigurationError"
    # a fleet sent in parts whose parts did not all arrive (metalflow.client.fleet)
    FLEET_INCOMPLETE = "FleetIncomplete"


# Retryable (so not an ErrorName, which every retry policy treats as permanent): the boot server
# refused a ramdisk's agent token (an earlier boot's, or one handed out twice); that agent stops,
# and the retry finds the host booted again with a new token (activities/boot/agent_tokens.py).
AGENT_TOKEN_REFUSED = "AgentTokenRefused"
# Permanent: a step got no agent reply with a valid proof of the host's token in several asks.
AGENT_REPLY_REFUSED = "AgentReplyRefused"


def permanent(name: ErrorName, message: str) -> ApplicationError:
    """A failure retrying cannot fix: the message must say what to change."""
    return ApplicationError(message, type=name.value, non_retryable=True)


def transient(name: str, message: str) -> ApplicationError:
    """A failure worth retrying with backoff (timeouts, 5xx, connection resets)."""
    return ApplicationError(message, type=name, non_retryable=False)


class BMCAddressError(ValueError):
    """A BMC address that cannot be used; the message names what is wrong and what to write.

    Raised by metalflow.api.bmc_address (pure); activities carry it as ErrorName.BMC_ADDRESS."""
