import { Injectable } from '@nestjs/common';

import { AppError, ErrorCode } from '../common/app-error.js';
import type { ConversationAccess } from '../conversations/conversations.repository.js';
import { MembershipService } from '../conversations/membership.service.js';
import { DeviceDirectory } from '../devices/device-directory.service.js';
import type { Sender } from './messages.types.js';

/**
 * The check of an e2e send's `recipientDevices` (PROTOCOL.md section 1): the client must
 * have sealed the message key to exactly the current members' devices that have a
 * published key, the sending device aside; otherwise nothing is stored and the client
 * re-seals. Both look-ups are in-memory caches that membership and key changes invalidate
 * on every instance, so the check costs no round trip on the hot path.
 *
 * What the service cannot check: that a key belongs to whom it claims (keys are trusted
 * on first use by the clients) and that the ciphertext really is sealed to the devices named.
 */
@Injectable()
export class E2eRecipients {
  constructor(
    private readonly membership: MembershipService,
    private readonly directory: DeviceDirectory,
  ) {}

  /** Throws `bad_request` for a server-encrypted conversation, `devices_changed` on any difference. */
  async check(access: ConversationAccess, sender: Sender, recipientDevices: readonly string[]): Promise<void> {
    if (access.encryption !== 'e2e') {
      throw AppError.badRequest('recipientDevices is only for e2e conversations', {
        problems: [{ path: 'recipientDevices', message: 'only for e2e conversations' }],
      });
    }
    const own = `${sender.userId}/${sender.deviceId}`;
    const members = await this.membership.memberIds(access.id);
    const current = new Set(
      (await this.directory.devicesOf(members))
        .filter((device) => device.hasKey)
        .map((device) => `${device.userId}/${device.deviceId}`)
        .filter((pair) => pair !== own),
    );
    const named = new Set(recipientDevices);
    const missing = [...current].filter((pair) => !named.has(pair)).sort();
    const extra = [...named].filter((pair) => !current.has(pair)).sort();
    if (missing.length > 0 || extra.length > 0) {
      throw new AppError(ErrorCode.DevicesChanged, "the members' devices changed: seal to them and resend", {
        missing,
        extra,
      });
    }
  }
}
