// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The baseline the rollup is measured against: the paper's approach
/// of writing each record's index on the main chain directly, one L1
/// transaction per record (its CID digest under the record id, and an event).
/// Used only by the gas comparison (`scripts/gas-table`), never deployed by
/// the farm.
contract DirectIndex {
    mapping(uint256 => bytes32) public recordCid;

    event RecordIndexed(uint256 indexed record, address indexed writer, bytes32 cid);

    function index(uint256 record, bytes32 cid) external {
        recordCid[record] = cid;
        emit RecordIndexed(record, msg.sender, cid);
    }
}
