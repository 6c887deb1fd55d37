using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Tests.Support;
using Google.Protobuf;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// d-engine wire compatibility: byte vectors written by hand from the protobuf rules (tag = field
/// number &lt;&lt; 3 | wire type; 0 = varint, 2 = length-delimited) decode to the expected fields and
/// encode back to the same bytes.
/// </summary>
public sealed class WireFormatTests
{
    private static byte[] Hex(string spaced) => Convert.FromHexString(spaced.Replace(" ", "", StringComparison.Ordinal));

    private static T DecodesAndRoundTrips<T>(MessageParser<T> parser, byte[] wire)
        where T : IMessage<T>
    {
        var message = parser.ParseFrom(wire);
        Assert.Equal(Convert.ToHexString(wire), Convert.ToHexString(message.ToByteArray()));
        return message;
    }

    // Insert{key "k", value "v", ttl_secs 5}: key 1/LEN, value 2/LEN, ttl_secs 3/varint.
    private const string InsertBytes = "0A 01 6B  12 01 76  18 05";

    // WriteCommand{insert = 1/LEN, 8 bytes}.
    private const string InsertCommandBytes = "0A 08 " + InsertBytes;

    [Fact]
    public void Insert_with_ttl_is_key_value_ttl_in_field_order()
    {
        var insert = DecodesAndRoundTrips(WriteCommand.Types.Insert.Parser, Hex(InsertBytes));
        Assert.Equal("k", insert.Key.ToStringUtf8());
        Assert.Equal("v", insert.Value.ToStringUtf8());
        Assert.Equal(5UL, insert.TtlSecs);
        Assert.Equal(0UL, insert.ExpiresAtUnixMs);
    }

    [Fact]
    public void WriteCommand_insert_is_field_1_wrapping_the_insert()
    {
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex(InsertCommandBytes));
        Assert.Equal(WriteCommand.OperationOneofCase.Insert, command.OperationCase);
        Assert.Equal("k", command.Insert.Key.ToStringUtf8());
        Assert.Equal(5UL, command.Insert.TtlSecs);
    }

    [Fact]
    public void Entry_with_a_command_payload_nests_the_WriteCommand_bytes_in_EntryPayload_field_2()
    {
        // index 1/varint, term 2/varint, payload 3/LEN (12 bytes) = EntryPayload{command 2/LEN (10 bytes)}.
        var entry = DecodesAndRoundTrips(Entry.Parser, Hex("08 01  10 02  1A 0C  12 0A " + InsertCommandBytes));

        Assert.Equal(1UL, entry.Index);
        Assert.Equal(2UL, entry.Term);
        Assert.Equal(EntryPayload.PayloadOneofCase.Command, entry.Payload.PayloadCase);
        Assert.Equal(Hex(InsertCommandBytes), entry.Payload.Command.ToByteArray());
    }

    [Fact]
    public void A_hand_written_entry_applies_through_the_engine()
    {
        var entry = Entry.Parser.ParseFrom(Hex("08 01  10 02  1A 0C  12 0A " + InsertCommandBytes));
        using var engine = new TestEngine();

        engine.Machine.ApplyChunk([entry]);

        Assert.Equal("v", engine.GetString("k"));
        Assert.True(engine.Machine.TryGetExpiry(Utf8("k"), out var expiry));
        Assert.Equal(engine.NowUnixMs + 5_000, expiry);
        Assert.Equal(new LogPosition(1, 2), engine.Machine.LastApplied);
    }

    [Fact]
    public void LogId_is_term_then_index()
    {
        var id = DecodesAndRoundTrips(LogId.Parser, Hex("08 03  10 07"));
        Assert.Equal(3UL, id.Term);
        Assert.Equal(7UL, id.Index);
    }

    [Fact]
    public void LogId_values_above_127_use_multi_byte_varints()
    {
        // 300 = 0b10_0101100 -> low group 0x2C with continuation bit (0xAC), then 0x02.
        var id = DecodesAndRoundTrips(LogId.Parser, Hex("08 AC 02  10 01"));
        Assert.Equal(300UL, id.Term);
        Assert.Equal(1UL, id.Index);
        Assert.Equal(new LogPosition(1, 300).ToLogId(), id);
    }

    [Fact]
    public void SnapshotMetadata_is_last_included_then_the_32_byte_checksum()
    {
        var checksum = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        // last_included 1/LEN (4 bytes: term 1, index 3), checksum 2/LEN (0x20 = 32 bytes).
        var wire = Hex("0A 04 08 01 10 03  12 20").Concat(checksum).ToArray();

        var metadata = DecodesAndRoundTrips(SnapshotMetadata.Parser, wire);

        Assert.Equal(1UL, metadata.LastIncluded.Term);
        Assert.Equal(3UL, metadata.LastIncluded.Index);
        Assert.Equal(checksum, metadata.Checksum.ToByteArray());
    }

    [Fact]
    public void WriteCommand_delete_is_field_2_wrapping_the_key()
    {
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("12 03  0A 01 6B"));
        Assert.Equal(WriteCommand.OperationOneofCase.Delete, command.OperationCase);
        Assert.Equal("k", command.Delete.Key.ToStringUtf8());
    }

    [Fact]
    public void CompareAndSwap_with_an_expected_value_carries_field_2()
    {
        // compare_and_swap 3/LEN (9 bytes): key "k", expected_value "a", new_value "b".
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("1A 09  0A 01 6B  12 01 61  1A 01 62"));

        Assert.Equal(WriteCommand.OperationOneofCase.CompareAndSwap, command.OperationCase);
        var cas = command.CompareAndSwap;
        Assert.Equal("k", cas.Key.ToStringUtf8());
        Assert.True(cas.HasExpectedValue);
        Assert.Equal("a", cas.ExpectedValue.ToStringUtf8());
        Assert.Equal("b", cas.NewValue.ToStringUtf8());
    }

    [Fact]
    public void CompareAndSwap_without_an_expected_value_omits_field_2_and_means_must_be_absent()
    {
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("1A 06  0A 01 6B  1A 01 62"));

        Assert.False(command.CompareAndSwap.HasExpectedValue);
        Assert.Equal("b", command.CompareAndSwap.NewValue.ToStringUtf8());
    }

    [Fact]
    public void CompareAndSwap_with_an_empty_expected_value_is_present_and_encodes_as_12_00()
    {
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("1A 08  0A 01 6B  12 00  1A 01 62"));

        Assert.True(command.CompareAndSwap.HasExpectedValue);
        Assert.True(command.CompareAndSwap.ExpectedValue.IsEmpty);

        var built = new WriteCommand.Types.CompareAndSwap { Key = ByteString.CopyFromUtf8("k"), ExpectedValue = ByteString.Empty, NewValue = ByteString.CopyFromUtf8("b") };
        Assert.Equal(Hex("0A 01 6B  12 00  1A 01 62"), built.ToByteArray());
    }

    [Fact]
    public void The_insert_expiry_stamp_is_field_100_after_the_d_engine_fields()
    {
        // expires_at_unix_ms: tag 100 << 3 | 0 = 800 -> varint A0 06; value 1000 -> E8 07.
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("0A 0C  0A 01 6B  12 01 76  18 05  A0 06 E8 07"));

        Assert.Equal(5UL, command.Insert.TtlSecs);
        Assert.Equal(1000UL, command.Insert.ExpiresAtUnixMs);
        // d-engine sees a plain Insert: without our field the bytes are exactly d-engine's.
        command.Insert.ExpiresAtUnixMs = 0;
        Assert.Equal(Hex(InsertCommandBytes), command.ToByteArray());
    }

    [Fact]
    public void The_cas_as_of_stamp_is_field_100_of_CompareAndSwap()
    {
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("1A 0A  0A 01 6B  1A 01 62  A0 06 E8 07"));

        Assert.False(command.CompareAndSwap.HasExpectedValue);
        Assert.Equal(1000UL, command.CompareAndSwap.AsOfUnixMs);
    }

    [Fact]
    public void The_insert_sequencing_stamp_is_field_101_of_Insert()
    {
        // as_of_unix_ms: tag 101 << 3 | 0 = 808 -> varint A8 06; value 1000 -> E8 07.
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("0A 0C  0A 01 6B  12 01 76  18 05  A8 06 E8 07"));

        Assert.Equal(1000UL, command.Insert.AsOfUnixMs);
        Assert.Equal(0UL, command.Insert.ExpiresAtUnixMs);
        command.Insert.AsOfUnixMs = 0;
        Assert.Equal(Hex(InsertCommandBytes), command.ToByteArray());
    }

    [Fact]
    public void The_delete_sequencing_stamp_is_field_100_of_Delete()
    {
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("12 07  0A 01 6B  A0 06 E8 07"));

        Assert.Equal("k", command.Delete.Key.ToStringUtf8());
        Assert.Equal(1000UL, command.Delete.AsOfUnixMs);
    }

    [Fact]
    public void ExpireKeys_is_WriteCommand_field_100_with_as_of_and_listed_keys()
    {
        // expire_keys: tag 100 << 3 | 2 = 802 -> A2 06, 11 bytes: as_of 1/varint 1000 (E8 07),
        // keys 2/LEN (6 bytes) = ExpiredKey{key "k", expires_at 2/varint 999 (E7 07)}.
        var command = DecodesAndRoundTrips(WriteCommand.Parser, Hex("A2 06 0B  08 E8 07  12 06  0A 01 6B  10 E7 07"));

        Assert.Equal(WriteCommand.OperationOneofCase.ExpireKeys, command.OperationCase);
        Assert.Equal(1000UL, command.ExpireKeys.AsOfUnixMs);
        var key = Assert.Single(command.ExpireKeys.Keys);
        Assert.Equal("k", key.Key.ToStringUtf8());
        Assert.Equal(999UL, key.ExpiresAtUnixMs);
    }

    [Fact]
    public void A_noop_entry_is_an_empty_message_in_EntryPayload_field_1()
    {
        var entry = DecodesAndRoundTrips(Entry.Parser, Hex("08 05  10 01  1A 02  0A 00"));

        Assert.Equal(5UL, entry.Index);
        Assert.Equal(EntryPayload.PayloadOneofCase.Noop, entry.Payload.PayloadCase);
        Assert.Null(EntryDecoder.Decode(entry, partition: 0).Command);
    }

    [Fact]
    public void A_membership_entry_nests_AddNode_in_MembershipChange_in_EntryPayload_field_3()
    {
        // AddNode{node_id 2, address "a:1", status ACTIVE = 3} is 9 bytes; MembershipChange{add_node 1/LEN} 11;
        // EntryPayload{config 3/LEN} 13 (0x0D).
        var entry = DecodesAndRoundTrips(Entry.Parser, Hex("08 06  10 01  1A 0D  1A 0B  0A 09  08 02  12 03 61 3A 31  18 03"));

        Assert.Equal(6UL, entry.Index);
        Assert.Equal(EntryPayload.PayloadOneofCase.Config, entry.Payload.PayloadCase);
        var add = entry.Payload.Config.AddNode;
        Assert.Equal(2U, add.NodeId);
        Assert.Equal("a:1", add.Address);
        Assert.Equal(NodeStatus.Active, add.Status);
        Assert.Equal(new ApplyEntry(6, 1, null), EntryDecoder.Decode(entry, partition: 0));
    }

    [Fact]
    public void BatchPromote_packs_its_repeated_node_ids()
    {
        // batch_promote 4/LEN (6 bytes): node_ids 1/LEN packed [1, 2], new_status 2/varint ACTIVE.
        var change = DecodesAndRoundTrips(MembershipChange.Parser, Hex("22 06  0A 02 01 02  10 03"));

        Assert.Equal([1U, 2U], change.BatchPromote.NodeIds);
        Assert.Equal(NodeStatus.Active, change.BatchPromote.NewStatus);
    }
}
