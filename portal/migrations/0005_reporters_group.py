from django.db import migrations


def create_reporters_group(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name="reporters")


class Migration(migrations.Migration):
    dependencies = [("portal", "0004_notifications")]

    operations = [migrations.RunPython(create_reporters_group, migrations.RunPython.noop)]
