using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Concurrency;
using Orleans.Runtime;

namespace DEngine.Orleans.Ownership;

/// <inheritdoc cref="IRecordsAdminGrain" />
[StatelessWorker(1)]
public sealed partial class RecordsAdminGrain(
    IOptions<DEngineOptions> options,
    IClusterMembershipService membership,
    ILogger<RecordsAdminGrain> logger) : Grain, IRecordsAdminGrain
{
    /// <inheritdoc />
    public async Task<ForgetReport> ForgetSilo(string silo)
    {
        if (string.IsNullOrWhiteSpace(silo))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "Name the silo to forget (its --name, as `dengine status` shows it).");
        }
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Name == silo && member.Status is not SiloStatus.Dead)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{silo}' is in the cluster ({member.Status}); only a silo that is gone for good can be forgotten. Stop it first, or let it serve its partitions.");
            }
        }
        var holderOf = new List<int>();
        var ownerOf = new List<int>();
        for (var partition = 0; partition < options.Value.Partitions; partition++)
        {
            // Holders first: once the owner is cleared, the next activation looks for copies and must not wait for this silo.
            if (await GrainFactory.GetGrain<IPartitionHoldersGrain>(partition).Remove(silo))
            {
                holderOf.Add(partition);
            }
            if (await GrainFactory.GetGrain<IPartitionOwnerGrain>(partition).ForgetOwner(silo))
            {
                ownerOf.Add(partition);
            }
        }
        LogForgot(silo, holderOf.Count, ownerOf.Count);
        return new ForgetReport(silo, [.. holderOf], [.. ownerOf]);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "An operator forgot silo {Silo}: removed from the holders of {Holders} partitions; {Owned} partitions it owned are served from the newest remaining copy.")]
    private partial void LogForgot(string silo, int holders, int owned);
}
