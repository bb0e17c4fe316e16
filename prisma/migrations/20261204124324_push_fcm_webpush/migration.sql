-- AlterTable
ALTER TABLE "devices" ADD COLUMN     "fcm_token" TEXT,
ADD COLUMN     "web_push_auth" TEXT,
ADD COLUMN     "web_push_endpoint" TEXT,
ADD COLUMN     "web_push_p256dh" TEXT;
