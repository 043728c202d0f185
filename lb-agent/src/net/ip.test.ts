import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  canonicalIp,
  cidrContains,
  ipFromKernelBytes,
  ipToKernelBytes,
  ipv4MaskToPrefix,
  parseCidr,
  prefixToIpv4Mask,
} from './ip.ts';
import { blockContains, blockSize, parseAddressBlock } from './pool.ts';

describe('IP addresses', () => {
  test('IPv6 is canonicalized per RFC 5952', () => {
    assert.equal(canonicalIp('FD00:0000:0000:0000:0000:0000:0000:0001'), 'fd00::1');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
    assert.equal(canonicalIp('::ffff:192.0.2.1'), '::ffff:c000:201');
    assert.equal(canonicalIp('::'), '::');
    assert.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
    assert.equal(canonicalIp('10.0.0.256'), undefined);
    assert.equal(canonicalIp('fe80::1%eth0'), undefined);
  });

  test('kernel layout: 16 bytes, IPv4 in the first four, decoded by family', () => {
    const v4 = ipToKernelBytes('10.1.2.3', 'ipv4');
    assert.equal(v4.toString('hex'), '0a010203000000000000000000000000');
    assert.equal(ipFromKernelBytes(v4, 'ipv4'), '10.1.2.3');
    const v6 = ipToKernelBytes('fd00::10', 'ipv6');
    assert.equal(v6.toString('hex'), 'fd000000000000000000000000000010');
    assert.equal(ipFromKernelBytes(v6, 'ipv6'), 'fd00::10');
  });

  test('CIDRs: host bits must be clear; containment by family', () => {
    assert.equal(parseCidr('10.0.0.1/24'), undefined);
    const c = parseCidr('10.0.0.0/24')!;
    assert.ok(cidrContains(c, '10.0.0.255'));
    assert.ok(!cidrContains(c, '10.0.1.0'));
    assert.ok(!cidrContains(c, 'fd00::1'));
    assert.ok(cidrContains(parseCidr('fd00::/64')!, 'fd00::abcd'));
    assert.equal(parseCidr('10.0.0.0/33'), undefined);
  });

  test('IPv4 masks and prefixes', () => {
    assert.equal(ipv4MaskToPrefix(0xffffff00), 24);
    assert.equal(ipv4MaskToPrefix(0xff00ff00), undefined);
    assert.equal(prefixToIpv4Mask(24), 0xffffff00);
    assert.equal(prefixToIpv4Mask(0), 0);
  });

  test('address blocks: CIDR, range, single address, and clear errors', () => {
    const r = parseAddressBlock('192.0.2.10-192.0.2.20');
    assert.ok(typeof r !== 'string');
    assert.equal(blockSize(r), 11n);
    assert.ok(blockContains(r, '192.0.2.20'));
    assert.ok(!blockContains(r, '192.0.2.21'));
    const one = parseAddressBlock('192.0.2.7');
    assert.ok(typeof one !== 'string' && blockSize(one) === 1n);
    assert.match(String(parseAddressBlock('10.0.0.1/24')), /host bits/);
    assert.match(String(parseAddressBlock('10.0.0.9-10.0.0.1')), /first address is after the last/);
    assert.match(String(parseAddressBlock('10.0.0.1-fd00::1')), /mixes IPv4 and IPv6/);
    assert.match(String(parseAddressBlock('banana')), /not a CIDR/);
  });
});
