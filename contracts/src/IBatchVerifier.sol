// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice A Groth16 (BN254) verifier for one version of the batch circuit.
/// Implementations are generated from the circuit's verifying key by
/// `medrollup-l1 verifier` (see contracts/README.md).
interface IBatchVerifier {
    /// @notice sha256 of the verifying key (arkworks uncompressed encoding),
    /// the `verifying_key_sha256` of the key manifest it was generated from.
    function vkHash() external view returns (bytes32);

    /// @notice Checks `proof` = [A.x, A.y, B.x.c1, B.x.c0, B.y.c1, B.y.c0, C.x, C.y]
    /// against the public inputs [old root, new root, tx commitment, timestamp].
    /// Returns false (never reverts) for any invalid proof or out-of-range input.
    function verifyProof(uint256[8] calldata proof, uint256[4] calldata input) external view returns (bool);
}
