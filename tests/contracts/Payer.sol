// SPDX-License-Identifier: MIT
// Sends ETH from inside a contract, as exchanges and smart-contract wallets do, so
// settled's tests can check that internal transfers are found (and reverted ones are not).
pragma solidity ^0.8.20;

contract Payer {
    // Call tree: 0 = this call, 1 = the transfer to `to`.
    function pay(address to) external payable {
        (bool ok, ) = payable(to).call{value: msg.value}("");
        require(ok, "transfer failed");
    }

    // Call tree: 0 = this call, 1 = to `a`, 2 = to `b`; each gets half.
    function split(address a, address b) external payable {
        (bool ok, ) = payable(a).call{value: msg.value / 2}("");
        require(ok, "transfer to a failed");
        (ok, ) = payable(b).call{value: msg.value - msg.value / 2}("");
        require(ok, "transfer to b failed");
    }

    // The transaction succeeds, but the frame that paid `to` reverts: nothing arrives.
    // Call tree: 0 = this call, 1 = this.payThenFail (reverted), 2 = to `to` (under it).
    function payInRevertedFrame(address to) external payable {
        try this.payThenFail{value: msg.value}(to) {} catch {}
    }

    function payThenFail(address to) external payable {
        (bool ok, ) = payable(to).call{value: msg.value}("");
        require(ok, "transfer failed");
        revert("paid, then failed");
    }
}
