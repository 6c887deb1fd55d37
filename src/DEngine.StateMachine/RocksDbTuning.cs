using RocksDbSharp;

namespace DEngine.StateMachine;

/// <summary>
/// Every RocksDB option the engine sets, built from <see cref="RocksDbStateMachineOptions"/> in one
/// place: the block cache, the database options and each column family's options. The live database
/// and a snapshot's database being prepared for install open with the same.
/// </summary>
internal static class RocksDbTuning
{
    /// <summary>The block cache of one machine: the shared one when configured, else its own LRU cache.</summary>
    public static Cache BlockCache(RocksDbStateMachineOptions settings) =>
        settings.SharedBlockCache ?? Cache.CreateLru(settings.BlockCacheBytes);

    /// <summary>Database-wide options: create what is missing, paranoid checks, background jobs.</summary>
    public static DbOptions DbOptions(RocksDbStateMachineOptions settings)
    {
        var dbOptions = new DbOptions()
            .SetCreateIfMissing(true)
            .SetCreateMissingColumnFamilies(true)
            .SetParanoidChecks(true);
        Native.Instance.rocksdb_options_set_max_background_jobs(dbOptions.Handle, settings.MaxBackgroundJobs);
        return dbOptions;
    }

    /// <summary>The engine's column families with their options (the default family gets the auxiliary ones).</summary>
    public static ColumnFamilies Families(RocksDbStateMachineOptions settings, Cache blockCache) =>
        new(AuxFamilyOptions(settings, blockCache))
        {
            { RocksDbStateMachine.DataFamily, DataFamilyOptions(settings, blockCache) },
            { RocksDbStateMachine.MetaFamily, AuxFamilyOptions(settings, blockCache) },
            { RocksDbStateMachine.TtlFamily, AuxFamilyOptions(settings, blockCache) },
            { RocksDbStateMachine.SessionsFamily, AuxFamilyOptions(settings, blockCache) },
        };

    private static ColumnFamilyOptions DataFamilyOptions(RocksDbStateMachineOptions settings, Cache blockCache)
    {
        var table = new BlockBasedTableOptions()
            .SetBlockCache(blockCache)
            .SetFilterPolicy(BloomFilterPolicy.Create(10, false))
            .SetFormatVersion(5);
        var options = new ColumnFamilyOptions()
            .SetWriteBufferSize(settings.WriteBufferSize)
            .SetMaxWriteBufferNumber(settings.MaxWriteBufferNumber)
            .SetMinWriteBufferNumberToMerge(settings.MinWriteBufferNumberToMerge)
            .SetTargetFileSizeBase(settings.TargetFileSizeBase)
            .SetMaxBytesForLevelBase(settings.MaxBytesForLevelBase)
            .SetLevelCompactionDynamicLevelBytes(settings.LevelCompactionDynamicLevelBytes)
            .SetBlockBasedTableFactory(table);
        if (settings.Compression)
        {
            options.SetCompression(Compression.Lz4);
            Native.Instance.rocksdb_options_set_bottommost_compression(options.Handle, (int)Compression.Zstd);
        }
        return options;
    }

    private static ColumnFamilyOptions AuxFamilyOptions(RocksDbStateMachineOptions settings, Cache blockCache) =>
        new ColumnFamilyOptions()
            .SetWriteBufferSize(settings.AuxWriteBufferSize)
            .SetBlockBasedTableFactory(new BlockBasedTableOptions().SetBlockCache(blockCache));
}
